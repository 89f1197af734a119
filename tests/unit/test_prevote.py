"""PreVote: who grants, when a round is won, and what the gate lets pysyncobj do around a tick."""

from __future__ import annotations

from typing import Any

import pytest

from sessionquorum.store._prevote import (
    REPLY,
    REQUEST,
    LogPosition,
    PreVote,
    PreVoteGate,
    Voter,
    grant,
    parse_request,
    reply_message,
    request_message,
)
from sessionquorum.store._readindex import ACK, ASK, GRANT, ROUND, ReadIndex
from sessionquorum.store.raft import SyncObjConf, _GuardedSyncObj

MIN_ELECTION_S = 0.4
OUR_LAST = LogPosition(5, 10)


def voter(
    term: int = 5,
    voted: bool = False,
    last: LogPosition = OUR_LAST,
    is_leader: bool = False,
    since_leader_s: float | None = None,
) -> Voter:
    return Voter(term, voted, last, is_leader, since_leader_s)


# ------------------------------------------------------------------ the voter's rule


def test_grant_up_to_date_candidate_without_a_live_leader_granted() -> None:
    assert grant(6, LogPosition(5, 10), voter(), MIN_ELECTION_S)
    assert grant(6, LogPosition(5, 11), voter(since_leader_s=MIN_ELECTION_S + 0.01), MIN_ELECTION_S)


def test_grant_voter_heard_a_leader_recently_refused() -> None:
    assert not grant(6, LogPosition(5, 10), voter(since_leader_s=0.1), MIN_ELECTION_S)


def test_grant_voter_is_leader_refused() -> None:
    assert not grant(6, LogPosition(5, 10), voter(is_leader=True), MIN_ELECTION_S)


@pytest.mark.parametrize("last", [LogPosition(4, 99), LogPosition(5, 9)])
def test_grant_candidate_log_behind_refused(last: LogPosition) -> None:
    assert not grant(6, last, voter(), MIN_ELECTION_S)


def test_grant_proposed_term_below_voters_refused() -> None:
    assert not grant(4, LogPosition(5, 10), voter(term=5), MIN_ELECTION_S)


def test_grant_proposed_term_equal_only_if_voter_has_not_voted() -> None:
    assert grant(5, LogPosition(5, 10), voter(term=5, voted=False), MIN_ELECTION_S)
    assert not grant(5, LogPosition(5, 10), voter(term=5, voted=True), MIN_ELECTION_S)


def test_parse_request_malformed_fields_none() -> None:
    assert parse_request({"type": REQUEST, "term": "6", "last_log_term": 1, "last_log_index": 1}) is None
    assert parse_request({"type": REQUEST, "term": True, "last_log_term": 1, "last_log_index": 1}) is None
    assert parse_request({"type": REQUEST}) is None
    assert parse_request({"type": REQUEST, "term": 6, "last_log_term": 5, "last_log_index": 3}) == (
        6,
        LogPosition(5, 3),
    )


# ------------------------------------------------------------------ the asker's round


def test_round_majority_of_three_won_with_one_grant() -> None:
    pre_vote = PreVote(cluster_size=3, win_valid_s=0.4)
    request = pre_vote.start(current_term=5, last=LogPosition(5, 10), self_id="a", now=0.0)
    assert request["term"] == 6
    assert not pre_vote.may_campaign(5, now=0.0)
    assert pre_vote.on_reply("b", {"type": REPLY, "round": request["round"], "term": 6, "granted": True}, 1.0)
    assert pre_vote.may_campaign(5, now=1.1)
    assert not pre_vote.may_campaign(5, now=1.5)  # the win went stale: ask again
    assert not pre_vote.may_campaign(6, now=1.1)  # the term moved: the win was for term 6 only


def test_round_refusals_and_duplicates_not_a_majority_of_five() -> None:
    pre_vote = PreVote(cluster_size=5, win_valid_s=0.4)
    request = pre_vote.start(5, LogPosition(5, 10), "a", 0.0)
    granted = {"type": REPLY, "round": request["round"], "term": 6, "granted": True}
    assert not pre_vote.on_reply("b", granted, 1.0)
    assert not pre_vote.on_reply("b", granted, 1.0)  # the same peer twice counts once
    assert not pre_vote.on_reply("c", {**granted, "granted": False}, 1.0)
    assert not pre_vote.may_campaign(5, 1.0)
    assert pre_vote.on_reply("d", granted, 1.0)


def test_round_reply_to_an_earlier_round_ignored() -> None:
    pre_vote = PreVote(cluster_size=3, win_valid_s=0.4)
    first = pre_vote.start(5, LogPosition(5, 10), "a", 0.0)
    pre_vote.start(5, LogPosition(5, 10), "a", 0.0)
    late = {"type": REPLY, "round": first["round"], "term": 6, "granted": True}
    assert not pre_vote.on_reply("b", late, 1.0)
    assert pre_vote.rounds_started == 2 and pre_vote.rounds_won == 0


def test_round_silent_peers_asked_again_until_answered_or_stale() -> None:
    pre_vote = PreVote(cluster_size=5, win_valid_s=0.4)
    request = pre_vote.start(5, LogPosition(5, 10), "a", now=10.0)
    assert pre_vote.resend_due(10.01) is None  # not yet
    assert pre_vote.resend_due(10.06) == request
    assert pre_vote.resend_due(10.07) is None  # spaced
    pre_vote.on_reply("b", {"type": REPLY, "round": request["round"], "term": 6, "granted": False}, 10.08)
    assert pre_vote.answered("b") and not pre_vote.answered("c")
    assert pre_vote.resend_due(10.12) == request
    assert pre_vote.resend_due(10.5) is None  # a win would no longer be valid: the next round asks


# ------------------------------------------------------------------ the gate around a tick


class Node:
    def __init__(self, node_id: str) -> None:
        self.id = node_id


class Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, node: Node, message: dict[str, Any]) -> bool:
        self.sent.append((node.id, message))
        return True


class FakeSyncObj:
    """The pysyncobj 0.3.17 attributes the gate reads, under their mangled names."""

    def __init__(self, peers: int = 2) -> None:
        self._SyncObj__raftElectionDeadline = 10.0
        self._SyncObj__otherNodes = {Node(f"p{i}") for i in range(peers)}
        self._SyncObj__connectedNodes = set(self._SyncObj__otherNodes)
        self._SyncObj__selfNode = Node("self")
        self._SyncObj__transferInProgress = False
        self._SyncObj__votedForNodeId: str | None = None
        self._SyncObj__transport = Transport()
        self.term = 5
        self.leader = False

    def _isLeader(self) -> bool:
        return self.leader

    def _getTerm(self) -> int:
        return self.term

    def _SyncObj__getCurrentLogTerm(self) -> int:
        return 5

    def _SyncObj__getCurrentLogIndex(self) -> int:
        return 10

    def _SyncObj__generateRaftTimeout(self) -> float:
        return 0.5


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def gate_for(sync: FakeSyncObj, clock: Clock, enabled: bool = True) -> PreVoteGate:
    size = len(sync._SyncObj__otherNodes) + 1
    pre_vote = PreVote(size, win_valid_s=MIN_ELECTION_S) if enabled else None
    return PreVoteGate(sync, pre_vote, MIN_ELECTION_S, clock)


def test_gate_deadline_passed_asks_peers_instead_of_campaigning() -> None:
    sync, clock = FakeSyncObj(), Clock(11.0)
    gate = gate_for(sync, clock)
    gate.before_tick()
    assert sync._SyncObj__raftElectionDeadline == float("inf")  # pysyncobj's check cannot pass
    assert sorted(to for to, m in sync._SyncObj__transport.sent if m["type"] == REQUEST) == ["p0", "p1"]
    assert all(m["term"] == 6 for _, m in sync._SyncObj__transport.sent)
    gate.after_tick()
    assert sync._SyncObj__raftElectionDeadline == 11.5  # renewed as pysyncobj would have
    assert sync.term == 5


def test_gate_silent_peer_asked_again_answered_one_not() -> None:
    sync, clock = FakeSyncObj(), Clock(11.0)
    gate = gate_for(sync, clock)
    gate.before_tick()
    request = sync._SyncObj__transport.sent[0][1]
    gate.after_tick()
    gate.on_message(Node("p0"), {"type": REPLY, "round": request["round"], "term": 6, "granted": False})
    clock.now += 0.06
    gate.before_tick()
    gate.after_tick()
    assert [to for to, _ in sync._SyncObj__transport.sent[2:]] == ["p1"]  # the lost request, again


def test_gate_round_won_lets_the_next_tick_campaign() -> None:
    sync, clock = FakeSyncObj(), Clock(11.0)
    gate = gate_for(sync, clock)
    gate.before_tick()
    request = sync._SyncObj__transport.sent[0][1]
    assert gate.on_message(Node("p0"), {"type": REPLY, "round": request["round"], "term": 6, "granted": True})
    gate.after_tick()
    assert sync._SyncObj__raftElectionDeadline == 0  # the won round's "now"
    gate.before_tick()  # next tick: nothing hidden, pysyncobj campaigns
    assert sync._SyncObj__raftElectionDeadline == 0


def test_gate_deadline_not_passed_hidden_then_restored() -> None:
    sync, clock = FakeSyncObj(), Clock(9.0)
    gate = gate_for(sync, clock)
    gate.before_tick()
    assert sync._SyncObj__transport.sent == []
    gate.after_tick()
    assert sync._SyncObj__raftElectionDeadline == 10.0


def test_gate_heartbeat_during_tick_kept() -> None:
    sync, clock = FakeSyncObj(), Clock(9.0)
    gate = gate_for(sync, clock)
    gate.before_tick()
    assert not gate.on_message(Node("p0"), {"type": "append_entries", "term": 5})
    sync._SyncObj__raftElectionDeadline = 9.7  # what pysyncobj's handler does next
    gate.after_tick()
    assert sync._SyncObj__raftElectionDeadline == 9.7


@pytest.mark.parametrize("case", ["transfer", "single node", "leader", "disabled"])
def test_gate_bypassed_deadline_left_to_pysyncobj(case: str) -> None:
    sync, clock = FakeSyncObj(peers=0 if case == "single node" else 2), Clock(11.0)
    sync._SyncObj__transferInProgress = case == "transfer"  # timeout_now from the leader
    sync.leader = case == "leader"
    gate = gate_for(sync, clock, enabled=case != "disabled")
    gate.before_tick()
    assert sync._SyncObj__raftElectionDeadline == 10.0
    assert sync._SyncObj__transport.sent == []


def test_gate_answers_request_refused_after_recent_heartbeat_granted_later() -> None:
    sync, clock = FakeSyncObj(), Clock(20.0)
    gate = gate_for(sync, clock)
    request = {"type": REQUEST, "round": 1, "term": 6, "last_log_term": 5, "last_log_index": 10}
    gate.on_message(Node("p1"), {"type": "append_entries", "term": 5})
    assert gate.on_message(Node("p0"), request)
    clock.now += MIN_ELECTION_S + 0.1
    assert gate.on_message(Node("p0"), request)
    replies = [m["granted"] for _, m in sync._SyncObj__transport.sent if m["type"] == REPLY]
    assert replies == [False, True]
    assert sync.term == 5  # answering a pre-vote never changes a term


def test_gate_unknown_or_malformed_message_harmless() -> None:
    sync, clock = FakeSyncObj(), Clock(20.0)
    gate = gate_for(sync, clock)
    assert gate.on_message(Node("p0"), {"type": REQUEST, "term": "x"})  # consumed, no reply
    assert not gate.on_message(Node("p0"), {"type": "something_new"})  # passed on to pysyncobj
    assert sync._SyncObj__transport.sent == []


def _real_syncobj(peers: int) -> _GuardedSyncObj:
    """pysyncobj's SyncObj with our fixes, no tick thread: the test drives its handlers."""
    return _GuardedSyncObj(
        "127.0.0.1:1",
        [f"127.0.0.1:{2 + i}" for i in range(peers)],
        conf=SyncObjConf(autoTick=False),
        busy_tick_s=0.2,
        pre_vote=None,
        election_min_s=MIN_ELECTION_S,
        reads=ReadIndex(timeout_s=1.0),
    )


# ------------------------------------------------------------------ an old node's view


def test_pysyncobj_handler_pre_vote_messages_ignored_as_by_a_node_without_prevote() -> None:
    # A node without PreVote (mid rolling upgrade) runs pysyncobj's own handler: it must
    # neither fail nor change term, vote or leader on our message types.
    sync = _real_syncobj(1)
    try:
        pysyncobj_handler = _GuardedSyncObj.__mro__[1]._SyncObj__onMessageReceived
        (peer,) = sync._SyncObj__otherNodes
        before = (sync._getTerm(), sync._SyncObj__votedForNodeId, sync._isLeader(), sync._getLeader())
        request = request_message(1, 99, LogPosition(98, 1000))
        pysyncobj_handler(sync, peer, request)
        pysyncobj_handler(sync, peer, reply_message(request, True))
        # ReadIndex's messages too (store/_readindex.py): an old node ignores them.
        for kind in (ROUND, ACK, ASK, GRANT):
            pysyncobj_handler(sync, peer, {"type": kind, "round": 1, "ask": 1, "term": 99, "index": 5})
        after = (sync._getTerm(), sync._SyncObj__votedForNodeId, sync._isLeader(), sync._getLeader())
        assert after == before
    finally:
        sync.destroy()


# ------------------------------------------------- votes while led (leases rely on it)


@pytest.mark.parametrize("rule", ["on", "canary-off"])
def test_a_node_that_hears_from_its_leader_ignores_a_vote_request(rule: str) -> None:
    # A real pysyncobj SyncObj (no tick thread): a vote request for a newer term from a
    # peer, right after this node heard from its leader (a read round of its term).
    sync = _real_syncobj(2)
    try:
        leader, candidate = sorted(sync._SyncObj__otherNodes, key=str)
        sync._SyncObj__onMessageReceived(leader, {"type": ROUND, "round": 1, "term": sync._getTerm()})
        if rule == "canary-off":
            sync._started_at -= 10 * MIN_ELECTION_S  # as if started long ago ...
            contact = sync._gate._leader_contact
            assert contact is not None
            sync._gate._leader_contact = contact - 10 * MIN_ELECTION_S  # ... and the leader went quiet
        term = sync._getTerm()
        vote = {"type": "request_vote", "term": term + 1, "last_log_index": 99, "last_log_term": 99}
        sync._SyncObj__onMessageReceived(candidate, vote)
        if rule == "on":
            assert sync._getTerm() == term and sync._SyncObj__votedForNodeId is None
            assert sync.counts["votes_refused_while_led"] == 1
        else:
            # Without the rule pysyncobj takes the newer term and votes: a new leader could be
            # elected while the old one still answered reads from its lease.
            assert sync._getTerm() == term + 1 and sync._SyncObj__votedForNodeId is not None
    finally:
        sync.destroy()


def test_a_restarted_node_ignores_vote_requests_for_the_first_election_timeout() -> None:
    sync = _real_syncobj(2)
    try:
        candidate = sorted(sync._SyncObj__otherNodes, key=str)[1]
        vote = {"type": "request_vote", "term": sync._getTerm() + 1, "last_log_index": 9, "last_log_term": 9}
        sync._SyncObj__onMessageReceived(candidate, vote)
        assert sync.counts["votes_refused_while_led"] == 1  # it may have acknowledged a lease
    finally:
        sync.destroy()

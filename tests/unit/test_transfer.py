"""Leadership transfer (store/_transfer.py): the leader's order of steps, the target's flag,
the voters' rule, and a canary where the old leader keeps its lease."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from sessionquorum.store import _transfer
from sessionquorum.store._readindex import ROUND
from sessionquorum.store._transfer import FLAG, Handover, honours
from tests.unit.test_prevote import MIN_ELECTION_S, _real_syncobj
from tests.unit.test_readindex import LEASE_S, Net, Outcome

HANDED_TIMEOUT_S = 0.4


class Node:
    def __init__(self, address: str) -> None:
        self.address = self.id = address

    def __repr__(self) -> str:
        return self.address


class Leader:
    """What Handover reads of a pysyncobj leader: term 5, log end 10, two followers."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.leader = True
        self.term = 5
        self.b, self.c = Node("b"), Node("c")
        self._SyncObj__otherNodes = {self.b, self.c}
        self._SyncObj__connectedNodes = {self.b, self.c}
        self._SyncObj__raftMatchIndex = {self.b: 9, self.c: 8}
        self._SyncObj__transferInProgress = False
        self._SyncObj__transport = self

    def send(self, node: Node, message: dict[str, Any]) -> bool:
        self.events.append(f"{message['type']} to {node}")
        return True

    def _isLeader(self) -> bool:
        return self.leader

    def _getTerm(self) -> int:
        return self.term

    def _SyncObj__getCurrentLogIndex(self) -> int:
        return 10


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _setup(end_lease: bool = True) -> tuple[Leader, Clock, Handover, Net, list[str | None]]:
    events: list[str] = []
    net = Net()
    net.views["a"] = replace(net.views["a"], lease_s=LEASE_S)
    net.tick("a", Outcome())
    net.deliver()  # a's lease now holds

    def ended() -> None:
        events.append("lease ended")
        if end_lease:
            net.reads["a"].end_lease()

    sync, clock = Leader(events), Clock()
    outcomes: list[str | None] = []
    return sync, clock, Handover(sync, clock, ended, HANDED_TIMEOUT_S), net, outcomes


def _lease_read(net: Net) -> bool:
    read = Outcome()
    net.tick("a", read)
    return read.results == [(10, None)] and net.wire == []


def test_leader_holds_proposals_until_target_caught_up_then_ends_lease_before_timeout_now() -> None:
    sync, _, handover, net, outcomes = _setup()
    handover.request("b", 2.0, outcomes.append)
    handover.leader_tick()
    assert handover.holds_proposals() and not handover.silences_appends()
    assert sync.events == []  # b is at 9 of 10: not yet
    sync._SyncObj__raftMatchIndex[sync.b] = 10
    handover.leader_tick()
    assert sync.events == ["lease ended", "timeout_now to b"]  # the order is the safety argument
    assert handover.silences_appends() and not handover.lease_allowed(5)
    assert not _lease_read(net)  # every read of this term now needs a confirmed round
    sync.leader, sync.term = False, 6  # b's vote request for term 6 arrived
    handover.leader_tick()
    assert outcomes == [None] and not handover.holds_proposals() and handover.lease_allowed(6)


def test_old_leader_keeping_its_lease_serves_reads_after_handing_over_canary() -> None:
    # The protection off: the lease is not ended. The flagged vote a follower now grants
    # (below, on a real SyncObj) elects b while a still answers reads from its lease.
    sync, _, handover, net, outcomes = _setup(end_lease=False)
    handover.request("c", 2.0, outcomes.append)
    sync._SyncObj__raftMatchIndex[sync.c] = 10
    handover.leader_tick()
    assert sync.events[-1] == "timeout_now to c"
    assert _lease_read(net), "the canary did not keep the lease: the test above could not fail"
    follower = _real_syncobj(2)
    try:
        old, target = sorted(follower._SyncObj__otherNodes, key=str)
        term = follower._getTerm()
        follower._SyncObj__onMessageReceived(old, {"type": ROUND, "round": 1, "term": term})
        vote = {
            "type": "request_vote",
            "term": term + 1,
            "last_log_index": 99,
            "last_log_term": 99,
            FLAG: term,
        }
        follower._SyncObj__onMessageReceived(target, vote)
        assert follower._SyncObj__votedForNodeId is not None  # granted despite the leader's contact
    finally:
        follower.destroy()


@pytest.mark.parametrize("wait", ["handed timeout", "deadline"])
def test_nobody_took_over_in_time_leader_resumes_without_a_lease_this_term(wait: str) -> None:
    sync, clock, handover, _, outcomes = _setup()
    if wait == "deadline":
        sync._SyncObj__raftMatchIndex[sync.b] = 9  # never caught up: never handed over
    else:
        sync._SyncObj__raftMatchIndex[sync.b] = 10
    handover.request(None, 1.0, outcomes.append)  # b: the most caught-up connected follower
    handover.leader_tick()
    clock.now += HANDED_TIMEOUT_S / 2
    handover.leader_tick()
    assert outcomes == []
    if wait == "deadline":
        assert sync.events == []
        clock.now += 1.0
    else:
        assert sync.events.count("timeout_now to b") == 2  # repeated while waiting
        clock.now += HANDED_TIMEOUT_S / 2
    handover.leader_tick()
    assert outcomes == [_transfer.TIMED_OUT]
    assert not handover.holds_proposals() and not handover.silences_appends()
    # Once timeout_now went out, no lease again in this term; never handed over, no change.
    assert handover.lease_allowed(5) is (wait == "deadline") and handover.lease_allowed(6)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("follower", _transfer.NOT_LEADER),
        ("unknown", _transfer.UNKNOWN_TARGET),
        ("alone", _transfer.NO_TARGET),
        ("gone", _transfer.GONE),
    ],
)
def test_transfer_refused_leaves_leadership_and_lease_untouched(case: str, reason: str) -> None:
    sync, _, handover, net, outcomes = _setup()
    sync.leader = case != "follower"
    if case == "alone":
        sync._SyncObj__connectedNodes = set()
    handover.request("z" if case == "unknown" else None, 2.0, outcomes.append)
    handover.leader_tick()
    if case == "gone":
        sync._SyncObj__connectedNodes = set()
        handover.leader_tick()
    assert outcomes == [reason]
    assert "lease ended" not in sync.events and handover.lease_allowed(5) and _lease_read(net)


def test_second_request_while_one_waits_refused_as_busy() -> None:
    _, _, handover, _, outcomes = _setup()
    handover.request("b", 2.0, outcomes.append)
    handover.request("c", 2.0, outcomes.append)
    assert outcomes == [_transfer.BUSY]


def test_target_flags_only_the_vote_requests_of_its_handed_over_campaign() -> None:
    sync, _, handover, _, _ = _setup()
    sync.leader = False
    sync._SyncObj__transferInProgress = True  # timeout_now arrived from the leader of term 5
    handover.before_tick()
    flagged = {"type": "request_vote", "term": 6}
    later = {"type": "request_vote", "term": 7}  # its own next election: no transfer
    other = {"type": "append_entries", "term": 6}
    for message in (flagged, later, other):
        handover.tag(message)
    assert flagged[FLAG] == 5 and FLAG not in later and FLAG not in other


@pytest.mark.parametrize(
    ("message", "honoured"),
    [
        ({"term": 6, FLAG: 5}, True),
        ({"term": 7, FLAG: 5}, False),  # not the very next term
        ({"term": 6, FLAG: 4}, False),  # handed over in a term this voter has left
        ({"term": 6}, False),
        ({"term": 6, FLAG: True}, False),
        ({"term": 6, FLAG: "5"}, False),
    ],
)
def test_voter_honours_only_a_flag_for_its_own_term_and_the_next(
    message: dict[str, Any], honoured: bool
) -> None:
    assert honours(message, 5) is honoured


@pytest.mark.parametrize("flag", ["this term", "none", "old term"])
def test_follower_that_just_heard_its_leader_votes_only_for_the_flagged_candidate(flag: str) -> None:
    sync = _real_syncobj(2)
    try:
        leader, candidate = sorted(sync._SyncObj__otherNodes, key=str)
        term = sync._getTerm()
        sync._started_at -= 10 * MIN_ELECTION_S  # not a fresh start: only the contact counts
        sync._SyncObj__onMessageReceived(leader, {"type": ROUND, "round": 1, "term": term})
        vote: dict[str, Any] = {
            "type": "request_vote",
            "term": term + 1,
            "last_log_index": 9,
            "last_log_term": 9,
        }
        if flag != "none":
            vote[FLAG] = term if flag == "this term" else term - 1
        sync._SyncObj__onMessageReceived(candidate, vote)
        if flag == "this term":
            assert sync._getTerm() == term + 1 and sync._SyncObj__votedForNodeId == candidate.id
            assert sync.counts["votes_granted_for_transfer"] == 1
        else:
            assert sync._getTerm() == term and sync._SyncObj__votedForNodeId is None
            assert sync.counts["votes_refused_while_led"] == 1
    finally:
        sync.destroy()

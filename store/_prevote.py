"""PreVote (Raft thesis 9.6): a node that cannot win an election never raises its term.

pysyncobj 0.3.17 campaigns as soon as a follower's election deadline passes: it raises its
term, and any node that hears the higher term steps down. A node returning from a partition
therefore deposed a healthy leader at the heal (measured: a 3.5 s write gap in the chaos
scenario `partition-isolate-leader`). With PreVote the node first asks its peers "would you
vote for me at term + 1?", without changing any term; only with a majority of grants
(itself included) does it let pysyncobj run its real election.

A peer grants only if the asker's log is at least as up to date as its own and it has not
heard from a current leader within the shortest election timeout: while a leader holds a
majority, a majority refuses, so an isolated node keeps its old term and simply follows the
leader when the network heals.

`PreVote` is the decision logic and holds no pysyncobj object (unit-tested alone); `raft.py`
wires it into `_GuardedSyncObj` and carries the messages over pysyncobj's authenticated
transport as two message types of our own. pysyncobj's handler dispatches on known types
only, so a node without PreVote ignores them (a rolling upgrade then still elects: such a
node campaigns directly, and the PreVote nodes vote for it as before).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

REQUEST = "sq_pre_vote"
REPLY = "sq_pre_vote_reply"

# An unanswered request is sent again this often while its round is young. pysyncobj checks
# a connection's read timeout only when the connection next has an event, so the first
# message on a link that was idle (two followers never talk) finds it "timed out", drops
# it and the message (measured: the first pre-vote to the other follower after a leader
# was cut off was lost, every time; the round failed and failover took 2.1 s).
RESEND_S = 0.05


@dataclass(frozen=True, slots=True)
class LogPosition:
    """The last entry of a log: Raft's "at least as up to date" compares these."""

    term: int
    index: int

    def at_least(self, other: LogPosition) -> bool:
        return (self.term, self.index) >= (other.term, other.index)


@dataclass(frozen=True, slots=True)
class Voter:
    """What a node knows when it is asked for a pre-vote."""

    term: int
    voted_this_term: bool
    last: LogPosition
    is_leader: bool
    # Seconds since an append_entries from a leader of our current term (None: never).
    since_leader_s: float | None


def refusal(
    proposed_term: int, candidate_last: LogPosition, voter: Voter, min_election_s: float
) -> str | None:
    """Why this voter would not vote for the asker at `proposed_term`; None means it grants.

    Mirrors Raft's vote rule (term, log) plus the one PreVote adds: a voter that has a
    live leader (or is one) refuses, so a node cut off from that leader cannot disrupt it.
    """
    if voter.is_leader:
        return "this node is the leader"
    if voter.since_leader_s is not None and voter.since_leader_s < min_election_s:
        return f"heard from a leader {voter.since_leader_s:.3f} s ago"
    if proposed_term < voter.term or (proposed_term == voter.term and voter.voted_this_term):
        return f"proposed term {proposed_term}, this node is in term {voter.term}"
    if not candidate_last.at_least(voter.last):
        return f"its log ends at {candidate_last}, this node's at {voter.last}"
    return None


def grant(proposed_term: int, candidate_last: LogPosition, voter: Voter, min_election_s: float) -> bool:
    """Would this voter vote for the asker at `proposed_term`? Decides a pre-vote reply."""
    return refusal(proposed_term, candidate_last, voter, min_election_s) is None


def request_message(round_id: int, proposed_term: int, last: LogPosition) -> dict[str, Any]:
    return {
        "type": REQUEST,
        "round": round_id,
        "term": proposed_term,
        "last_log_term": last.term,
        "last_log_index": last.index,
    }


def reply_message(request: dict[str, Any], granted: bool) -> dict[str, Any]:
    return {"type": REPLY, "round": request.get("round"), "term": request.get("term"), "granted": granted}


def parse_request(message: dict[str, Any]) -> tuple[int, LogPosition] | None:
    """(proposed term, candidate's last entry), or None for a malformed request."""
    term, last_term, last_index = (
        message.get("term"),
        message.get("last_log_term"),
        message.get("last_log_index"),
    )
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (term, last_term, last_index)):
        return None
    assert isinstance(term, int) and isinstance(last_term, int) and isinstance(last_index, int)
    return term, LogPosition(last_term, last_index)


class PreVote:
    """The asking side: one round at a time, counted per (round id, proposed term).

    A round is won when grants from a majority of the cluster (this node included) arrived
    for the term it proposed. A win is valid only for that term and only briefly: the
    election it allows must start at once, on the next tick, or the round is asked again
    (what the peers knew may have changed). Peers that have not answered are asked again
    every `RESEND_S` for as long as a win would stay valid.
    """

    def __init__(self, cluster_size: int, win_valid_s: float) -> None:
        self._cluster_size = cluster_size
        self._win_valid_s = win_valid_s
        self._round = 0
        self._term: int | None = None
        self._grants: set[str] = set()
        self._answered: set[str] = set()
        self._request: dict[str, Any] | None = None
        self._started_at = self._sent_at = 0.0
        self._won_at: float | None = None
        # How often PreVote held back or allowed an election (also in the log, at INFO).
        self.rounds_started = 0
        self.rounds_won = 0

    def resize(self, cluster_size: int) -> None:
        """The membership changed (pysyncobj's dynamic membership): majorities of the new one."""
        self._cluster_size = cluster_size

    def _majority(self, votes: int) -> bool:
        return votes * 2 > self._cluster_size

    def may_campaign(self, current_term: int, now: float) -> bool:
        """True if a round for `current_term + 1` was won recently enough to campaign now."""
        return (
            self._won_at is not None
            and self._term == current_term + 1
            and now - self._won_at <= self._win_valid_s
        )

    def start(self, current_term: int, last: LogPosition, self_id: str, now: float) -> dict[str, Any]:
        """Begin a round for `current_term + 1`; returns the request to send to every peer."""
        self._round += 1
        self._term = current_term + 1
        self._grants = {self_id}
        self._answered = {self_id}
        self._won_at = None
        self._started_at = self._sent_at = now
        self.rounds_started += 1
        log.info("pre-vote round %d for term %d", self._round, self._term)
        self._request = request_message(self._round, self._term, last)
        return self._request

    def resend_due(self, now: float) -> dict[str, Any] | None:
        """The current round's request if it is time to ask the silent peers again, else None."""
        if self._request is None or self._won_at is not None:
            return None
        if now - self._started_at > self._win_valid_s or now - self._sent_at < RESEND_S:
            return None
        self._sent_at = now
        return self._request

    def answered(self, peer_id: str) -> bool:
        return peer_id in self._answered

    def on_reply(self, peer_id: str, message: dict[str, Any], now: float) -> bool:
        """Count one reply; True exactly when it completes a winning majority."""
        if message.get("round") != self._round or message.get("term") != self._term:
            return False  # a reply to an earlier round: what it said may no longer hold
        self._answered.add(peer_id)
        if self._won_at is not None or not message.get("granted"):
            return False
        self._grants.add(peer_id)
        if not self._majority(len(self._grants)):
            return False
        self._won_at = now
        self.rounds_won += 1
        log.info("pre-vote round %d won for term %s (%d grants)", self._round, self._term, len(self._grants))
        return True


class PreVoteGate:
    """Wires `PreVote` into a pysyncobj 0.3.17 `SyncObj` (handed in by `store/raft.py`).

    pysyncobj campaigns inside its tick when `__raftElectionDeadline` has passed. Around
    each tick of a follower or candidate, the gate hides that deadline (sets it to +inf)
    unless a pre-vote round was just won, or the leader asked this node to take over
    (`timeout_now`: a leadership transfer must not wait for a round the old leader would
    refuse). When the hidden deadline had passed, the gate starts a round instead, and
    renews the deadline as pysyncobj would have. Whatever a message set during the tick (a
    leader's heartbeat, `timeout_now`, a won round's 0) is kept.

    The names below are pysyncobj 0.3.17's private (mangled) attributes; `raft.py` pins
    that version.
    """

    def __init__(self, syncobj: Any, pre_vote: PreVote | None, min_election_s: float, clock: Any) -> None:
        self._sync = syncobj
        self._pre_vote = pre_vote
        self._min_election_s = min_election_s
        self._clock = clock
        self._hidden: float | None = None
        self._leader_contact: float | None = None

    def _last(self) -> LogPosition:
        return LogPosition(
            self._sync._SyncObj__getCurrentLogTerm(), self._sync._SyncObj__getCurrentLogIndex()
        )

    def _send(self, message: dict[str, Any], resend: bool = False) -> None:
        assert self._pre_vote is not None
        for node in self._sync._SyncObj__otherNodes:
            if not (resend and self._pre_vote.answered(str(node.id))):
                self._sync._SyncObj__transport.send(node, message)

    def before_tick(self) -> None:
        sync, pre_vote = self._sync, self._pre_vote
        if pre_vote is None or sync._isLeader() or sync._SyncObj__selfNode is None:
            return
        if not sync._SyncObj__otherNodes or sync._SyncObj__transferInProgress:
            return  # a single node wins alone; a transfer is the leader's own request
        now = self._clock()
        term = sync._getTerm()
        if pre_vote.may_campaign(term, now):
            return
        deadline = sync._SyncObj__raftElectionDeadline
        self._hidden = deadline
        sync._SyncObj__raftElectionDeadline = float("inf")
        if deadline < now and sync._SyncObj__connectedNodes:
            self._hidden = now + sync._SyncObj__generateRaftTimeout()
            pre_vote.resize(len(sync._SyncObj__otherNodes) + 1)
            self._send(pre_vote.start(term, self._last(), str(sync._SyncObj__selfNode.id), now))
        elif (request := pre_vote.resend_due(now)) is not None:
            self._send(request, resend=True)

    def after_tick(self) -> None:
        if self._hidden is None:
            return
        if self._sync._SyncObj__raftElectionDeadline == float("inf"):
            self._sync._SyncObj__raftElectionDeadline = self._hidden
        self._hidden = None

    def note_leader_contact(self) -> None:
        """A message only the current leader sends arrived (a read round of our term)."""
        self._leader_contact = self._clock()

    def heard_from_leader_within(self, seconds: float) -> bool:
        return self._leader_contact is not None and self._clock() - self._leader_contact < seconds

    def on_message(self, node: Any, message: dict[str, Any]) -> bool:
        """Handle a pre-vote message (True), or note a leader's contact and pass it on (False)."""
        kind = message.get("type")
        sync = self._sync
        if kind == "append_entries" and message.get("term", -1) >= sync._getTerm():
            # pysyncobj accepts any append_entries of our term or later as its leader's.
            self._leader_contact = self._clock()
            return False
        if kind == REQUEST:
            parsed = parse_request(message)
            if parsed is None:
                return True
            now = self._clock()
            voter = Voter(
                term=sync._getTerm(),
                voted_this_term=sync._SyncObj__votedForNodeId is not None,
                last=self._last(),
                is_leader=bool(sync._isLeader()),
                since_leader_s=None if self._leader_contact is None else now - self._leader_contact,
            )
            refused = refusal(parsed[0], parsed[1], voter, self._min_election_s)
            granted = refused is None
            log.info(
                "pre-vote for term %d %s to %s",
                parsed[0],
                "granted" if refused is None else f"refused ({refused})",
                node.id,
            )
            sync._SyncObj__transport.send(node, reply_message(message, granted))
            return True
        if kind == REPLY:
            won = self._pre_vote is not None and self._pre_vote.on_reply(str(node.id), message, self._clock())
            if won and not sync._isLeader():
                sync._SyncObj__raftElectionDeadline = 0  # campaign on the next tick
            return True
        return False

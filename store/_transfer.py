"""Leadership transfer (Raft thesis 3.10) on a cluster whose leader holds read leases.

pysyncobj 0.3.17 has `transferLeadership`: the leader sends `timeout_now` to a caught-up
follower, which campaigns at once. Two things break it here (store/DESIGN.md, "Leader
transfer"):

- The other followers refuse every vote while they heard from a leader within
  election_min_s (the lease rule): the target wins only if the old leader's own vote
  completes a majority (3 nodes), never on 5.
- Letting the target's election through that rule is safe only if the old leader's lease
  has ended: a leader elected without the old leader's vote would otherwise commit while
  the old leader still answered reads from its lease.

So the old leader (a) holds new proposals and waits until the target has every entry it
has, (b) ends its lease for the rest of its term and stops its appends, then sends
`timeout_now`; the target's vote requests of the next term carry `FLAG` = the term it was
handed over in, and a follower in that term grants them although it heard from the leader
recently. If nobody took over within `handed_timeout_s` of `timeout_now` (or by the
request's deadline) the old leader resumes, without a lease in that term (a flagged request
may still be on the wire). Resuming early matters: with its appends silenced, the
followers' election timers run, and pysyncobj steps a leader down after
raft.leader_fallback_s without acknowledgements.

`Handover` holds the three roles' logic; `raft.py` wires it to pysyncobj (the names below
are pysyncobj 0.3.17's private attributes, which raft.py pins).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

TIMEOUT_NOW = "timeout_now"  # pysyncobj's own message type
FLAG = "sq_transfer"  # on a request_vote: the term whose leader handed over to the sender

# The leader repeats `timeout_now` this often while waiting: a message can be lost when a
# peer connection is re-established.
RESEND_S = 0.05
# The target repeats its vote requests for at most this long (then elections go on as usual).
CAMPAIGN_RESEND_FOR_S = 0.5

# Why a transfer did not happen (the caller maps these to store errors).
NOT_LEADER = "this node is not the leader"
BUSY = "a leadership transfer is already in progress"
NO_TARGET = "no connected follower to hand over to"
UNKNOWN_TARGET = "the target is not a member of this cluster"
GONE = "the target disconnected; this node still leads"
TIMED_OUT = "nobody took over in time; this node still leads (without a lease for this term)"

# Called once on the tick thread: None when this node no longer leads the term it handed
# over, else the reason it still leads (or never did).
Done = Callable[[str | None], None]


@dataclass(slots=True)
class _Request:
    target: str | None  # raft address; None: the most caught-up connected follower
    timeout_s: float
    done: Done


@dataclass(slots=True)
class _Active:
    node: Any
    term: int
    deadline: float
    done: Done
    handed_at: float | None = None  # when timeout_now was first sent
    sent_at: float = 0.0


def honours(message: dict[str, Any], voter_term: int) -> bool:
    """Whether a follower of `voter_term` grants this vote request despite a recent leader:
    only a request for the very next term from a node the leader of this term handed over to."""
    flag, term = message.get(FLAG), message.get("term")
    return (
        isinstance(flag, int)
        and isinstance(term, int)
        and not isinstance(flag, bool)
        and flag == voter_term
        and term == voter_term + 1
    )


class Handover:
    """Leader, target and voter side of a transfer. Every method runs on the tick thread
    except `request`."""

    def __init__(
        self, sync: Any, clock: Callable[[], float], end_lease: Callable[[], None], handed_timeout_s: float
    ) -> None:
        self._sync = sync
        self._handed_timeout_s = handed_timeout_s
        self._clock = clock
        self._end_lease = end_lease
        self._lock = threading.Lock()
        self._incoming: _Request | None = None
        self._active: _Active | None = None
        self._no_lease_term = -1
        self._campaign_term: int | None = None
        self._campaign_started: float | None = None
        self._vote_sent_at = 0.0
        # How often this node handed over; the last term it campaigned for as a transfer target.
        self.handed_over = 0
        self.last_flagged_term: int | None = None

    # ------------------------------------------------------------------ any thread
    def request(self, target: str | None, timeout_s: float, done: Done) -> None:
        with self._lock:
            if self._incoming is not None:
                done(BUSY)
                return
            self._incoming = _Request(target, timeout_s, done)

    # ------------------------------------------------------------------ leader side
    def holds_proposals(self) -> bool:
        """New commands wait: the target must end up with every entry this leader has."""
        return self._active is not None

    def silences_appends(self) -> bool:
        """After `timeout_now` this term's leader sends nothing the followers count as contact."""
        return self._active is not None and self._active.handed_at is not None

    def lease_allowed(self, term: int) -> bool:
        return term != self._no_lease_term

    def _pick(self, target: str | None) -> Any:
        sync = self._sync
        others = sync._SyncObj__otherNodes
        if target is not None:
            return next((n for n in others if str(n.address) == target), None)
        match = sync._SyncObj__raftMatchIndex
        connected = [n for n in others if n in sync._SyncObj__connectedNodes]
        if not connected:
            return None
        return max(connected, key=lambda n: (match.get(n, 0), str(n.address)))

    def _start(self, req: _Request, now: float) -> None:
        sync = self._sync
        if self._active is not None:
            req.done(BUSY)
            return
        if not sync._isLeader():
            req.done(NOT_LEADER)
            return
        node = self._pick(req.target)
        if node is None:
            req.done(UNKNOWN_TARGET if req.target is not None else NO_TARGET)
            return
        term = int(sync._getTerm())
        self._active = _Active(node, term, now + req.timeout_s, req.done)
        log.info("leadership transfer of term %d to %s: holding proposals until it is caught up", term, node)

    def _finish(self, reason: str | None) -> None:
        active, self._active = self._active, None
        assert active is not None
        who = (active.term, active.node)
        if reason is None:
            log.info("leadership transfer of term %d to %s: done, this node no longer leads", *who)
        else:
            log.warning("leadership transfer of term %d to %s failed: %s", *who, reason)
        active.done(reason)

    def leader_tick(self) -> None:
        with self._lock:
            req, self._incoming = self._incoming, None
        now = self._clock()
        if req is not None:
            self._start(req, now)
        active = self._active
        if active is None:
            return
        sync = self._sync
        who = (active.term, active.node)
        if not sync._isLeader() or sync._getTerm() != active.term:
            self._finish(None)
            return
        handed = active.handed_at
        if now >= active.deadline or (handed is not None and now - handed >= self._handed_timeout_s):
            self._finish(TIMED_OUT)
            return
        if active.node not in sync._SyncObj__connectedNodes:
            self._finish(GONE)  # stopping too (`down` stops every node), or cut off: do not wait
            return
        if active.handed_at is None:
            last = sync._SyncObj__getCurrentLogIndex()
            if sync._SyncObj__raftMatchIndex.get(active.node, 0) != last:
                return
            # The order is the safety argument: no lease read after this line in this term,
            # then nothing a follower counts as contact, then the request to take over.
            self._no_lease_term = active.term
            self._end_lease()
            active.handed_at = now
            self.handed_over += 1
            log.info("leadership transfer of term %d: lease ended, timeout_now to %s", *who)
        if now - active.sent_at >= RESEND_S:
            active.sent_at = now
            sync._SyncObj__transport.send(active.node, {"type": TIMEOUT_NOW, "term": active.term})

    # ------------------------------------------------------------------ target side
    def before_tick(self) -> None:
        """A follower told to take over campaigns this tick (pysyncobj) for term + 1; while
        that campaign is open its vote requests go out again every RESEND_S.

        pysyncobj sends a vote request once. Followers never talk to each other, so their
        link is idle and its first message is dropped (store/_prevote.py, RESEND_S): on 3
        nodes the old leader's vote made up for it, on 5 the transfer failed to an election
        timeout (measured: 3 of 6 transfers under load). A voter answers once per term
        (pysyncobj records its vote), so a repeated request is never counted twice.
        """
        sync = self._sync
        if sync._isLeader():
            self._campaign_started = None
            return
        now = self._clock()
        term = int(sync._getTerm())
        if sync._SyncObj__transferInProgress:
            self._campaign_term, self._campaign_started, self._vote_sent_at = term + 1, now, now
            return
        started = self._campaign_started
        if started is None or term != self._campaign_term or sync._SyncObj__raftLeader is not None:
            self._campaign_started = None
            return
        if now - started > CAMPAIGN_RESEND_FOR_S:
            self._campaign_started = None
            return
        if now - self._vote_sent_at >= RESEND_S:
            self._vote_sent_at = now
            request = {
                "type": "request_vote",
                "term": term,
                "last_log_index": sync._SyncObj__getCurrentLogIndex(),
                "last_log_term": sync._SyncObj__getCurrentLogTerm(),
            }
            for node in sync._SyncObj__otherNodes:
                sync._SyncObj__transport.send(node, dict(request))

    def tag(self, message: dict[str, Any]) -> None:
        """An outgoing message: the vote requests of the handed-over campaign carry FLAG."""
        term = message.get("term")
        if message.get("type") == "request_vote" and term is not None and term == self._campaign_term:
            message[FLAG] = term - 1
            self.last_flagged_term = term

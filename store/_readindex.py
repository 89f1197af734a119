"""ReadIndex (Raft thesis 6.4): linearizable reads without a log entry, on any node.

A read may be answered from a node's state once that state includes every entry committed
before the read arrived. The leader learns the smallest such index without writing:

1. It must have committed an entry of its own term (pysyncobj appends a no-op on election),
   so its commit index is at least that of every earlier leader.
2. It notes its commit index (the read index) and sends a confirmation round (one message
   to each peer, numbered). A peer acknowledges a round only while it is in the leader's
   term and is not itself leader. When a majority (the leader included) has acknowledged
   a round, no other leader can have committed anything before that round was sent: a
   newer leader needs the votes of a majority, whose terms would then be above ours, and
   that majority meets ours in at least one peer, which would not have acknowledged.
3. Once the node has applied up to the read index it reads its local state.

Reads that arrive while a round is being prepared share it; acknowledging round r also
confirms every earlier round (it was sent later than their reads arrived). A follower asks
the leader for a read index (`ASK`); the leader puts the ask in its next round and answers
with the index (`GRANT`) once confirmed; the follower waits until it has applied that
index. This is what spreads linearizable reads over the nodes.

`ReadIndex` is the decision logic, free of pysyncobj and of time (the caller passes `now`
and a `RaftView`), so it is unit-tested on its own; `raft.py` wires it to the tick thread
and carries the messages over pysyncobj's authenticated transport as message types of
our own (a node without them ignores them). Every method runs on the tick thread.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

ROUND = "sq_read_round"
ACK = "sq_read_ack"
ASK = "sq_read_ask"
GRANT = "sq_read_grant"

# A round not confirmed after this long is followed by a new one (confirming it confirms
# every earlier round): a message can be lost when a peer connection is re-established.
RESEND_S = 0.05
# Rounds in flight at once: enough to keep the pipe full, few enough to bound the messages.
MAX_ROUNDS_IN_FLIGHT = 4

# Why a read could not be given an index (the caller maps these to store errors).
NOT_LEADER = "not_leader"  # this node (or the node asked) is not the leader
NO_LEADER = "no_leader"  # no leader is known: nothing to ask
TIMED_OUT = "timed_out"  # no majority confirmed in time

# Called once: (read index, None) when the read may proceed (the index is applied here),
# or (None, reason).
Waiter = Callable[[int | None, str | None], None]
Send = Callable[[Hashable, dict[str, object]], None]


@dataclass(frozen=True, slots=True)
class RaftView:
    """What the tick thread knows of Raft at one moment."""

    is_leader: bool
    term: int
    commit_index: int
    last_applied: int
    # The leader has committed an entry of its current term (its election no-op).
    leader_ready: bool
    leader: Hashable | None
    peers: tuple[Hashable, ...]
    # How long a confirmed round lets the leader answer reads without another (0: never).
    lease_s: float = 0.0


@dataclass(slots=True)
class _Round:
    id: int
    term: int
    index: int
    started: float
    waiters: list[tuple[float, Waiter]]
    asks: list[tuple[Hashable, int]]


@dataclass(slots=True)
class _Ask:
    term: int
    leader: Hashable
    sent: float
    waiters: list[tuple[float, Waiter]] = field(default_factory=list)


def _fail(waiters: Iterable[tuple[float, Waiter]], reason: str) -> None:
    for _, waiter in waiters:
        waiter(None, reason)


class ReadIndex:
    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._pending: list[tuple[float, Waiter]] = []
        # Leader side.
        self._rounds: collections.deque[_Round] = collections.deque()
        self._next_round = 1
        self._acked: dict[Hashable, int] = {}
        self._acked_term = -1
        self._remote_asks: list[tuple[Hashable, int]] = []
        # Leader lease: until when (and in which term) reads need no round.
        self._lease_until = float("-inf")
        self._lease_term = -1
        # Follower side.
        self._asks: dict[int, _Ask] = {}
        self._next_ask = 1
        # Confirmed, waiting until this node has applied the index.
        self._applying: list[tuple[int, float, list[tuple[float, Waiter]]]] = []
        # How many rounds were sent and confirmed, and reads served (tests read these).
        self.rounds_sent = 0
        self.rounds_confirmed = 0
        self.reads_confirmed = 0
        self.reads_by_lease = 0

    @property
    def idle(self) -> bool:
        """Nothing pending, in flight or waiting: a tick has nothing to do."""
        return not (self._pending or self._rounds or self._remote_asks or self._asks or self._applying)

    def end_lease(self) -> None:
        """From now on every read of this term needs a confirmed round (a leadership transfer
        hands over: store/_transfer.py). Rounds confirmed later give no lease while the view's
        lease_s is 0."""
        self._lease_until = float("-inf")

    # ------------------------------------------------------------------ tick
    def tick(self, now: float, view: RaftView, incoming: list[Waiter], send: Send) -> None:
        """Take new reads, start a round (leader) or ask the leader (follower), expire.

        `now` must be read after `view`: a lease read takes `view.commit_index` as its index
        and is valid only if the lease still held at a moment after that index was read.
        """
        self._pending.extend((now, w) for w in incoming)
        self._release_applied(view)
        if view.is_leader:
            self._lead(now, view, send)
        else:
            self._follow(now, view, send)
        self._expire(now)

    def _lead(self, now: float, view: RaftView, send: Send) -> None:
        for ask in self._asks.values():  # asked a leader we replaced: ask ourselves
            self._pending.extend(ask.waiters)
        self._asks.clear()
        while self._rounds and self._rounds[0].term != view.term:
            stale = self._rounds.popleft()
            _fail(stale.waiters, NOT_LEADER)
            for node, ask_id in stale.asks:
                send(node, {"type": GRANT, "ask": ask_id, "error": NOT_LEADER})
        if not view.leader_ready:
            return
        if self._lease_term == view.term and now < self._lease_until:
            self._serve_by_lease(now, view, send)
        if len(self._rounds) >= MAX_ROUNDS_IN_FLIGHT:
            return
        resend = bool(self._rounds) and now - self._rounds[-1].started >= RESEND_S
        if not (self._pending or self._remote_asks or resend):
            return
        self._start_round(now, view, send)

    def _serve_by_lease(self, now: float, view: RaftView, send: Send) -> None:
        """Within the lease no other leader can exist (store/DESIGN.md, "Leases"): the commit
        index is the read index, no round needed. A lease past its half is renewed by an
        empty round, so steady reads never wait for one."""
        if self._pending:
            self.reads_by_lease += len(self._pending)
            self._applying.append((view.commit_index, now, self._pending))
            self._pending = []
            self._release_applied(view)
        for node, ask_id in self._remote_asks:
            send(node, {"type": GRANT, "ask": ask_id, "index": view.commit_index})
        self._remote_asks = []
        if not self._rounds and self._lease_until - now < view.lease_s / 2:
            self._start_round(now, view, send)

    def _start_round(self, now: float, view: RaftView, send: Send) -> None:
        round_ = _Round(self._next_round, view.term, view.commit_index, now, self._pending, self._remote_asks)
        self._next_round += 1
        self._pending, self._remote_asks = [], []
        self._rounds.append(round_)
        self.rounds_sent += 1
        for peer in view.peers:
            send(peer, {"type": ROUND, "round": round_.id, "term": view.term})
        self._confirm(view, send)  # a single-node cluster confirms at once

    def _follow(self, now: float, view: RaftView, send: Send) -> None:
        while self._rounds:  # we lost leadership: nothing in flight can be confirmed
            stale = self._rounds.popleft()
            _fail(stale.waiters, NOT_LEADER)
            for node, ask_id in stale.asks:
                send(node, {"type": GRANT, "ask": ask_id, "error": NOT_LEADER})
        for node, ask_id in self._remote_asks:
            send(node, {"type": GRANT, "ask": ask_id, "error": NOT_LEADER})
        self._remote_asks = []
        for ask_id in [i for i, a in self._asks.items() if a.leader != view.leader]:
            _fail(self._asks.pop(ask_id).waiters, NOT_LEADER)
        if not self._pending:
            return
        if view.leader is None:
            _fail(self._pending, NO_LEADER)
            self._pending = []
            return
        ask_id = self._next_ask
        self._next_ask += 1
        self._asks[ask_id] = _Ask(view.term, view.leader, now, self._pending)
        self._pending = []
        send(view.leader, {"type": ASK, "ask": ask_id, "term": view.term})

    def _expire(self, now: float) -> None:
        deadline = now - self._timeout_s
        while self._rounds and self._rounds[0].started < deadline:
            _fail(self._rounds.popleft().waiters, TIMED_OUT)
        for ask_id in [i for i, a in self._asks.items() if a.sent < deadline]:
            _fail(self._asks.pop(ask_id).waiters, TIMED_OUT)
        if self._applying and self._applying[0][1] < deadline:
            # Confirmed, but this node stopped applying (cut off from the leader).
            for _, _, waiters in (a for a in self._applying if a[1] < deadline):
                _fail(waiters, TIMED_OUT)
            self._applying = [a for a in self._applying if a[1] >= deadline]
        if self._pending and self._pending[0][0] < deadline:
            # A leader whose election no-op never commits: its reads cannot be confirmed.
            _fail([w for w in self._pending if w[0] < deadline], TIMED_OUT)
            self._pending = [w for w in self._pending if w[0] >= deadline]

    # -------------------------------------------------------------- messages
    def on_message(self, node: Hashable, message: dict[str, object], view: RaftView, send: Send) -> bool:
        """Handle one of our messages (True); anything else is not ours (False)."""
        kind = message.get("type")
        if kind == ROUND:
            ok = message.get("term") == view.term and not view.is_leader
            send(node, {"type": ACK, "round": message.get("round"), "term": view.term, "ok": ok})
        elif kind == ACK:
            round_id = message.get("round")
            ours = view.is_leader and message.get("ok") and message.get("term") == view.term
            if ours and isinstance(round_id, int):
                if self._acked_term != view.term:
                    self._acked, self._acked_term = {}, view.term
                self._acked[node] = max(round_id, self._acked.get(node, 0))
                self._confirm(view, send)
        elif kind == ASK:
            ask_id = message.get("ask")
            if isinstance(ask_id, int):
                if view.is_leader:
                    self._remote_asks.append((node, ask_id))
                else:
                    send(node, {"type": GRANT, "ask": ask_id, "error": NOT_LEADER})
        elif kind == GRANT:
            ask_id = message.get("ask")
            ask = self._asks.pop(ask_id, None) if isinstance(ask_id, int) else None
            if ask is not None:
                index, error = message.get("index"), message.get("error")
                if isinstance(index, int) and error is None:
                    self._applying.append((index, ask.sent, ask.waiters))
                    self._release_applied(view)
                else:
                    _fail(ask.waiters, error if isinstance(error, str) else NOT_LEADER)
        else:
            return False
        return True

    def _confirm(self, view: RaftView, send: Send) -> None:
        size = len(view.peers) + 1
        acked = self._acked if self._acked_term == view.term else {}
        while self._rounds:
            round_ = self._rounds[0]
            votes = 1 + sum(1 for peer in view.peers if acked.get(peer, 0) >= round_.id)
            if votes * 2 <= size:
                return
            self._rounds.popleft()
            self.rounds_confirmed += 1
            if view.lease_s > 0:
                # Every peer that acknowledged refuses votes for at least election_min_s
                # after it received the round, which was after `started`.
                if self._lease_term != round_.term:
                    self._lease_until = float("-inf")
                self._lease_term = round_.term
                self._lease_until = max(self._lease_until, round_.started + view.lease_s)
            for node, ask_id in round_.asks:
                send(node, {"type": GRANT, "ask": ask_id, "index": round_.index})
            if round_.waiters:
                self._applying.append((round_.index, round_.started, round_.waiters))
        self._release_applied(view)

    def _release_applied(self, view: RaftView) -> None:
        if not self._applying:
            return
        waiting = []
        for item in self._applying:
            index, _, waiters = item
            if index <= view.last_applied:
                self.reads_confirmed += len(waiters)
                for _, waiter in waiters:
                    waiter(index, None)
            else:
                waiting.append(item)
        self._applying = waiting

    def fail_all(self, reason: str) -> None:
        """At shutdown: nobody is left waiting."""
        for round_ in self._rounds:
            _fail(round_.waiters, reason)
        for ask in self._asks.values():
            _fail(ask.waiters, reason)
        for _, _, waiters in self._applying:
            _fail(waiters, reason)
        _fail(self._pending, reason)
        self._rounds.clear()
        self._asks.clear()
        self._applying, self._pending = [], []

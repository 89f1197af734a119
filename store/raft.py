"""The Raft bridge: the only module that imports pysyncobj.

It owns three translations and nothing else:
- one replicated entry point, `apply(entry: bytes)`, whose entry is a versioned msgpack
  command (pysyncobj numbers replicated methods by sorted name, so a second method would
  change what old log entries mean);
- pysyncobj's failure reasons -> store errors (NoLeader when the command was certainly not
  appended, OutcomeUnknown otherwise: measured, most "failed" writes had in fact committed);
- pysyncobj's tick-thread callbacks -> asyncio futures, so no thread blocks per write.

Snapshots are our canonical msgpack (`SessionMachine.snapshot`), not pysyncobj's pickle of
object attributes. The machine is guarded by one lock: the tick thread holds it while
applying, gRPC readers while reading, so a reader never sees a half-applied command.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj import journal as pysyncobj_journal
from pysyncobj import syncobj as pysyncobj_syncobj
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.syncobj import _COMMAND_TYPE
from pysyncobj.transport import TCPTransport
from pysyncobj.version import VERSION as PYSYNCOBJ_VERSION

from . import _membership, _peerguard, _readindex, _transfer
from . import members as _members
from ._outbox import Outbox
from ._packing import PackLimits
from ._prevote import PreVote, PreVoteGate
from ._readindex import RaftView, ReadIndex, Waiter
from .commands import LEASE_LEVEL, MULTI_LEVEL, UndecodableEntry
from .config import NodeConfig, read_secret
from .errors import ConfigError, InvalidArgument, NoLeader, NotLeader, NotReady, OutcomeUnknown, StoreError
from .journal import RaftJournal, fsync_dir
from .replies import Reply
from .snapshot_format import Capture, serialize_in_pieces
from .snapshots import Progress, Snapshotter, compaction_due, write_snapshot
from .state import SessionMachine

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# A leader's read lease lasts this share of election_min_s after its round was sent; the
# peers that acknowledged it refuse votes for all of election_min_s after receiving it.
# The rest is the margin for clock rates (store/DESIGN.md, "Leases").
LEASE_FRACTION = 0.75

# How often a proposer waiting for apply checks that this node is still the leader.
LEADERSHIP_CHECK_S = 0.05

# Exit code when the log holds an entry this code cannot apply, or apply failed (EX_SOFTWARE).
EXIT_UNDECODABLE = 70

# How a proposed entry is pickled into pysyncobj's log (`_Replicated.propose`); any
# protocol Python 3.8+ reads, and 4 frames bytes as bytes (pysyncobj's 2 does not).
ENTRY_PICKLE_PROTOCOL = 4

# Reasons that guarantee the command never entered the log.
_NOT_APPENDED = {FAIL_REASON.QUEUE_FULL, FAIL_REASON.MISSING_LEADER, FAIL_REASON.REQUEST_DENIED}


_READ_FAILURES = {
    _readindex.NOT_LEADER: "leadership changed while confirming the read index; nothing was read, retry",
    _readindex.NO_LEADER: "no leader is known to confirm a read index; nothing was read",
    _readindex.TIMED_OUT: "no majority confirmed the read index in time; nothing was read",
}


def _settle_read(future: asyncio.Future[int], index: int | None, reason: str | None) -> None:
    """On the loop: a read batch's outcome (ReadIndex reasons -> NoLeader, nothing was read)."""
    if future.done():
        return
    if index is not None:
        future.set_result(index)
    else:
        future.set_exception(NoLeader(_READ_FAILURES.get(reason or "", f"read index refused ({reason})")))


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's outcome read (asyncio logs an exception nobody retrieved)."""
    if not future.cancelled():
        future.exception()


def translate_failure(reason: int) -> StoreError:
    """pysyncobj failure reason -> store error: the one place this translation happens."""
    if reason in _NOT_APPENDED:
        return NoLeader(f"no leader accepted the command (pysyncobj reason {reason}); nothing was applied")
    return OutcomeUnknown(
        f"the leader changed before the command was known to commit (pysyncobj reason {reason}); "
        "retry with the same request id"
    )


class _Replicated(SyncObjConsumer):  # type: ignore[misc]
    """The replicated object pysyncobj sees. Holds no lock, socket or thread in its state."""

    def __init__(
        self, machine: SessionMachine, lock: threading.Lock, on_applied: Callable[[int], None]
    ) -> None:
        self._machine = machine
        self._lock = lock
        self._on_applied = on_applied
        super().__init__()

    @replicated  # type: ignore[untyped-decorator]
    def apply(self, entry: bytes) -> Reply | list[Reply]:
        """Apply one entry (a packed one answers a list, store/_packing.py); any failure
        stops the node loudly (exit 70).

        Skipping the entry would let this replica diverge, and raising into pysyncobj makes
        it retry the same entry forever on every node while health says SERVING. A crash
        loop is visible to a service manager; a silent wedge is not.
        """
        with self._lock:
            try:
                reply = self._machine.apply_entry(entry)
                now_ms = self._machine.now_ms
            except UndecodableEntry as exc:
                log.critical("undecodable log entry, stopping this node: %s", exc)
                os._exit(EXIT_UNDECODABLE)
            except BaseException:
                log.critical("applying a log entry failed, stopping this node", exc_info=True)
                os._exit(EXIT_UNDECODABLE)
        self._on_applied(now_ms)
        return reply

    def propose(self, entry: bytes, callback: Callable[[Any, int], None]) -> None:
        """What `self.apply(entry, callback=callback)` does, with a cheaper pickle (tick thread).

        pysyncobj's `@replicated` pickles `(method id, args)` with protocol 2, which writes
        bytes as a latin-1 string re-encoded in UTF-8: a 20 KB packed entry of random bytes
        became 30 KB, 37 us to pickle on the leader and 25 us to unpickle on every node
        (protocol 4: 20 KB, 1.3 and 0.9 us), and every journal write, cipher and socket
        carried the extra third. pysyncobj unpickles entries with `pickle.loads`, which reads
        any protocol, so nodes of an older release apply these entries and ours apply theirs;
        `apply` receives the same bytes either way. The method id is looked up as the
        decorator does (our one replicated method).
        """
        sync = self._syncObj
        consumer_id = id(self)
        func_id = sync._methodToID[(consumer_id, sync._getFuncName((consumer_id, "apply")))]
        command = pickle.dumps((func_id, (entry,)), protocol=ENTRY_PICKLE_PROTOCOL)
        sync._applyCommand(command, callback, _COMMAND_TYPE.REGULAR)

    def _serialize(self) -> bytes:
        with self._lock:
            return self._machine.snapshot()

    def _deserialize(self, data: bytes) -> None:
        with self._lock:
            self._machine.restore(data)
            now_ms = self._machine.now_ms
        self._on_applied(now_ms)


def keep_matching_entries(log: Any, message: dict[str, Any], commit_index: int) -> int:
    """Rewrite an incoming append_entries message so pysyncobj's follower code acts as Raft says.

    1. Truncate only on a conflict. pysyncobj 0.3.17 deletes every entry after prevLogIdx
       before appending, even entries that match the leader's (a pipelined or repeated
       batch, or a heartbeat sent while a batch is in flight). Entries already present with
       the same term are dropped from the message and prevLogIdx moved past them, so
       pysyncobj truncates exactly where Raft would.
    2. Reject towards the commit index. When prevLogIdx is past our log or its term differs,
       pysyncobj answers "next index = my log end + 1" or "= prevLogIdx". A follower with a
       conflicting uncommitted tail (a deposed leader's) then livelocks with a pipelining
       leader: the answer to one batch steps next index back by one, the answers to the
       batches behind it reset it to our log end + 1 (measured: a healed old leader never
       caught up). Entries up to our commit index are committed, hence in every later
       leader's log, so we answer "next index = commit index + 1": the leader resends from
       there and (1) skips what matches.

    Returns how many of our entries pysyncobj would have deleted and now keeps.
    """
    entries = message.get("entries") or []
    prev_idx, prev_term = message.get("prevLogIdx"), message.get("prevLogTerm")
    first, last = log[0][1], log[-1][1]
    if prev_idx is None or prev_idx < first:
        return 0  # compacted away here: pysyncobj's own handling stands
    if prev_idx > last or log[prev_idx - first][2] != prev_term:
        target = max(first, min(commit_index, prev_idx - 1, last))
        # pysyncobj rejects a mismatched prev entry with "next index = prevLogIdx".
        message["prevLogIdx"], message["prevLogTerm"], message["entries"] = target + 1, -1, []
        return 0
    matched = 0
    for entry in entries:
        idx = entry[1]
        if idx > last or log[idx - first][2] != entry[2]:
            break
        matched += 1
    if matched == 0 and entries:
        return 0  # the first entry is new or conflicts: pysyncobj handles it correctly
    if matched:
        prev_idx, prev_term = entries[matched - 1][1], entries[matched - 1][2]
    rest = entries[matched:]
    if not rest and log[-1][2] == message["term"]:
        # Nothing new, and our last entry carries the sender's term: it came from this
        # leader (one leader per term), so by log matching all we hold agrees with its log.
        prev_idx, prev_term = last, log[-1][2]
    kept: int = prev_idx - message["prevLogIdx"]
    message["prevLogIdx"], message["prevLogTerm"], message["entries"] = prev_idx, prev_term, rest
    return kept


# What _GuardedSyncObj counts, and how often at most it logs the totals (INFO).
FIX_COUNTS = (
    "entries_truncated",
    "matching_entries_kept",
    "next_index_rewinds_refused",
    "election_deadlines_renewed",
    "votes_refused_while_led",
    "votes_granted_for_transfer",
)
COUNTS_LOG_EVERY_S = 5.0


class _GuardedSyncObj(SyncObj):  # type: ignore[misc]
    """SyncObj with fixes to its log replication and elections (store/DESIGN.md, "pysyncobj fixes").

    The log fixes and PreVote hook the one message handler pysyncobj registers with its
    transport; the name is SyncObj's mangled private name, so this override is what the
    transport calls.
    """

    def __init__(
        self,
        *args: Any,
        busy_tick_s: float,
        pre_vote: PreVote | None,
        election_min_s: float,
        reads: ReadIndex,
        take_reads: Callable[[], list[Waiter]] | None = None,
        lease_s: Callable[[], float] = lambda: 0.0,
        send_proposals: Callable[[], None] = lambda: None,
        **kwargs: Any,
    ) -> None:
        # Set before SyncObj.__init__, which starts the tick thread.
        self._busy_tick_s = busy_tick_s
        self._send_proposals = send_proposals
        self._first_tick = True
        self._reads = reads
        self._take_reads = take_reads
        self._lease_s = lease_s
        self._election_min_s = election_min_s
        # A restarted node does not know when it last heard from a leader: it refuses votes
        # for the first election_min_s as if it just had (a lease may still count on it).
        self._started_at = raft_clock()
        # Wakes the tick thread out of its poll when a proposal or a read arrives (made on
        # the tick thread's first tick: the poller is not safe to change from another thread).
        self._notifier: PipeNotifier | None = None
        self._wake_pending = False
        self._commit_sent = 0
        self._announce_commit = False  # the commit index moved this tick: tell the followers
        # How often each hazard occurred here, logged (rate-limited, and at close): a
        # regression test reads them to show the fault it guards against happened in its run.
        self.counts = dict.fromkeys(FIX_COUNTS, 0)
        self._counts_logged_at = -COUNTS_LOG_EVERY_S
        self._gate = PreVoteGate(self, pre_vote, min_election_s=election_min_s, clock=raft_clock)
        # Leadership transfer (store/_transfer.py): ends this leader's lease before it hands over.
        # A target that has not won within election_min_s of timeout_now is not coming.
        self.handover = _transfer.Handover(self, raft_clock, reads.end_lease, election_min_s)
        # One membership change at a time (store/_membership.py), when dynamic change is on.
        self._change_gate = _membership.ChangeGate()
        self._tail_changes_pending = True
        # Set by the tick thread when the membership changed (ReplicatedLog renews its copy).
        self.membership_changed = True
        super().__init__(*args, **kwargs)

    def count(self, kind: str, n: int = 1) -> None:
        self.counts[kind] += n
        if raft_clock() - self._counts_logged_at >= COUNTS_LOG_EVERY_S:
            self._counts_logged_at = raft_clock()
            log.info("raft fix counts: %s", " ".join(f"{k}={v}" for k, v in self.counts.items()))

    def _onTick(self, timeToWait: float = 0.0) -> None:
        """A tick that ran long (a journal replay after a restart, a huge batch), or a slow
        start-up (loading a long journal), does not make this node campaign.

        pysyncobj checks its election deadline at the start of a tick, before reading the
        messages that arrived meanwhile, so a follower busy for longer than an election
        timeout started an election against a healthy leader and, with its higher term,
        deposed it (measured: follower-catchup-100k, 3 extra terms and a write gap on every
        restart). Delaying an election is always safe in Raft.
        """
        if self._first_tick:
            # The deadline was set before the journal was loaded (seconds, for a long one).
            self._first_tick = False
            self._renew_election_deadline()
            # A wake-up runs the read step at once, inside the poll: a lone read's round
            # goes out without waiting for a whole pysyncobj tick first.
            self._notifier = PipeNotifier(self._poller, callback=self._on_wake)
        # Cleared before the tick reads its queues: a request queued after this line finds
        # the flag down and wakes the next poll; one queued before is seen by this tick.
        self._wake_pending = False
        # The leader's appends went out unflushed (_DurableTransport): make them durable
        # before this tick counts acknowledgements towards a commit.
        journal = self._SyncObj__raftLog
        if isinstance(journal, RaftJournal):
            journal.before_send()
        started = raft_clock()
        self.handover.leader_tick()
        self.handover.before_tick()
        self._gate.before_tick()
        try:
            SyncObj._onTick(self, timeToWait)
        finally:
            self._gate.after_tick()
        if self._tail_changes_pending and not self._SyncObj__needLoadDumpFile:
            # The first ready tick loaded the snapshot (and its members): now the changes
            # appended after it, committed or not (store/DESIGN.md, "Membership", 3).
            self._tail_changes_pending = False
            if self._SyncObj__conf.dynamicMembershipChange:
                self.apply_tail_changes()
        if raft_clock() - started > self._busy_tick_s and not self._isLeader():
            self._renew_election_deadline()

    def wake(self) -> None:
        """Any thread: end the tick thread's poll now (a proposal or a read is waiting).

        Without it a proposal waited for the next tick and then for the append period
        (measured: 12 ms p50 for a lone write or read on an idle cluster).
        """
        notifier = self._notifier
        if notifier is None or self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(OSError):  # a full pipe already holds a wake-up
            notifier.notify()

    def _checkCommandsToApply(self) -> None:
        """Send what this tick appended at once, instead of at the next append period.

        Under load the entries that queued up meanwhile go out together: batching is by
        what is waiting, not by a timer. What waits in our outbox enters pysyncobj's queue
        first, several proposals packed into one entry where allowed (store/_outbox.py).
        """
        announce, self._announce_commit = self._announce_commit, False
        if self.handover.holds_proposals():
            if announce and self._isLeader():
                self._SyncObj__sendAppendEntries()
            return  # a transfer target must end up with every entry (store/_transfer.py)
        before = self._SyncObj__getCurrentLogIndex()
        self._send_proposals()
        SyncObj._checkCommandsToApply(self)
        if self._isLeader() and (announce or self._SyncObj__getCurrentLogIndex() != before):
            self._SyncObj__sendAppendEntries()

    def _SyncObj__applyLogEntries(self) -> bool:
        """A leader whose commit index moved tells its followers in this tick (pysyncobj: next
        period), so they apply, and answer follower reads, one round trip after the leader.

        Not here but at the end of the tick (`_checkCommandsToApply`, which pysyncobj runs
        right after): the entries proposed meanwhile go in the same message. Sending here
        too cost each follower two appends (and two acknowledgements, each with its own
        pickle, cipher and syscalls) per tick under load instead of one.
        """
        need_send = bool(SyncObj._SyncObj__applyLogEntries(self))
        commit = self._SyncObj__raftCommitIndex
        if commit > self._commit_sent and self._isLeader():
            self._commit_sent = commit
            self._announce_commit = True
        return need_send

    def _SyncObj__changeCluster(self, request: Any) -> bool:
        """pysyncobj's leader-side membership change, with the one-at-a-time rule enforced."""
        if not self._change_gate.may_change(self._SyncObj__raftCommitIndex):
            return False  # pysyncobj answers REQUEST_DENIED
        index = self._SyncObj__getCurrentLogIndex() + 1  # where pysyncobj appends it next
        done = bool(SyncObj._SyncObj__changeCluster(self, request))
        if done:
            self._change_gate.appended(index)
        return done

    def _SyncObj__doChangeCluster(self, request: Any, reverse: bool = False) -> bool:
        changed = bool(SyncObj._SyncObj__doChangeCluster(self, request, reverse))
        if changed:
            self.membership_changed = True
            log.info("membership change %s %s%s", request[0], request[1], " (undone)" if reverse else "")
        return changed

    def _SyncObj__updateClusterConfiguration(self, newNodes: Any) -> None:
        SyncObj._SyncObj__updateClusterConfiguration(self, newNodes)  # a snapshot's members
        self.membership_changed = True

    def apply_tail_changes(self) -> int:
        """Make the membership the latest in this node's log, as Raft says (pysyncobj applies
        a change at append, but after a restart only once it is applied). Re-applying one
        later is a no-op in pysyncobj; truncating it reverses it. Returns how many applied."""
        applied = int(self._SyncObj__raftLastApplied)
        end = int(self._SyncObj__getCurrentLogIndex())
        changed = 0
        for entry in self._SyncObj__getEntries(applied + 1, end - applied) if end > applied else []:
            request = self._SyncObj__parseChangeClusterRequest(entry[0])
            if request is not None and self._SyncObj__doChangeCluster(request):
                changed += 1
        if changed:
            log.info("applied %d membership change(s) from the log's uncommitted tail at start", changed)
        return changed

    def snapshot_members(self, last_index: int, cluster: Any) -> set[Any]:
        """The members as of the snapshot's last entry, not of the log's end (tick thread)."""
        if not self._SyncObj__conf.dynamicMembershipChange:
            return set(cluster)
        end = self._SyncObj__getCurrentLogIndex()
        later = self._SyncObj__getEntries(last_index + 1, end - last_index) if end > last_index else []
        changes = [self._SyncObj__parseChangeClusterRequest(entry[0]) for entry in later]
        return _membership.members_at(cluster, [c for c in changes if c is not None])

    def _SyncObj__sendAppendEntries(self) -> None:
        if self.handover.silences_appends():
            return  # handed over: no contact that would renew the followers' refusal window
        SyncObj._SyncObj__sendAppendEntries(self)

    def raft_view(self) -> RaftView:
        leader = bool(self._isLeader())
        commit = int(self._SyncObj__raftCommitIndex)
        term = int(self._getTerm())
        return RaftView(
            is_leader=leader,
            term=term,
            commit_index=commit,
            last_applied=int(self._SyncObj__raftLastApplied),
            leader_ready=leader and commit >= getattr(self, "_SyncObj__noopIDx", 2**62),
            leader=self._SyncObj__raftLeader,
            peers=tuple(self._SyncObj__otherNodes),
            lease_s=self._lease_s() if leader and self.handover.lease_allowed(term) else 0.0,
        )

    def _led_recently(self) -> bool:
        return (
            self._gate.heard_from_leader_within(self._election_min_s)
            or raft_clock() - self._started_at < self._election_min_s
        )

    def _on_wake(self) -> None:
        if self._take_reads is not None:
            self.read_tick(self._take_reads())

    def read_tick(self, incoming: list[Waiter]) -> None:
        if not incoming and self._reads.idle:
            return  # most ticks under load: no view to build
        view = self.raft_view()  # before the clock: see ReadIndex.tick
        self._reads.tick(raft_clock(), view, incoming, self._SyncObj__transport.send)

    def _renew_election_deadline(self) -> None:
        now = raft_clock()
        current: float = getattr(self, "_SyncObj__raftElectionDeadline")  # noqa: B009 - mangled
        if current < now:  # without this renewal, the next tick would have campaigned
            self.count("election_deadlines_renewed")
        self._SyncObj__raftElectionDeadline = max(current, now + self._SyncObj__generateRaftTimeout())

    def _SyncObj__deleteEntriesFrom(self, fromIDx: int) -> None:
        # Every truncation pysyncobj makes, applied or not (its CRITICAL line covers only
        # applied entries): with one leader in one term there must be none.
        self.count("entries_truncated", max(0, self._SyncObj__getCurrentLogIndex() - fromIDx + 1))
        SyncObj._SyncObj__deleteEntriesFrom(self, fromIDx)

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        if self._gate.on_message(node, message):
            return
        kind = message.get("type")
        if isinstance(kind, str) and kind.startswith("sq_read_"):
            view = self.raft_view()
            if kind == _readindex.ROUND and message.get("term") == view.term and not view.is_leader:
                self._gate.note_leader_contact()
            self._reads.on_message(node, message, view, self._SyncObj__transport.send)
            return
        if kind == "request_vote" and not self._isLeader() and self._led_recently():
            # Raft thesis 4.2.3: a node that hears from a leader neither votes nor raises its
            # term for another; a leader's lease counts on it (store/DESIGN.md, "Leases") ...
            if not _transfer.honours(message, int(self._getTerm())):
                self.count("votes_refused_while_led")
                return
            # ... unless that leader handed over to the candidate, having ended its lease first.
            self.count("votes_granted_for_transfer")
        if (
            kind == "append_entries"
            and "transmission" not in message
            and message.get("term", -1) >= self._getTerm()
        ):
            kept = keep_matching_entries(self._SyncObj__raftLog, message, self._SyncObj__raftCommitIndex)
            if kept:
                self.count("matching_entries_kept", kept)
        if kind != "next_node_idx" or not self._isLeader():
            SyncObj._SyncObj__onMessageReceived(self, node, message)
            return
        # The leader moves a follower's next index back to an older acknowledgement's
        # position when acknowledgements of pipelined batches arrive late, and resends what
        # the follower already has. A successful acknowledgement must never rewind it.
        next_index = self._SyncObj__raftNextIndex
        before = next_index.get(node)
        SyncObj._SyncObj__onMessageReceived(self, node, message)
        after = next_index.get(node)
        if message.get("success") and not message.get("reset") and before is not None and after is not None:
            if after < before:
                self.count("next_index_rewinds_refused")
            next_index[node] = max(before, after)


# The pysyncobj release the journal, transport and snapshot hooks below were written for:
# they replace a module-level name and rely on private attributes of that release.
PYSYNCOBJ_PINNED = "0.3.17"

# Journals built by ReplicatedLog and handed to pysyncobj by path: pysyncobj constructs its
# journal itself, through the `createJournal` name its syncobj module imported.
_pending_journals: dict[str, RaftJournal] = {}
_pending_journals_lock = threading.Lock()
_pysyncobj_create_journal = pysyncobj_journal.createJournal


def _create_journal(journalFile: str | None = None) -> Any:
    if journalFile is None:
        return _pysyncobj_create_journal(None)
    with _pending_journals_lock:
        journal = _pending_journals.pop(journalFile, None)
    if journal is None:
        raise RuntimeError(f"no journal prepared for {journalFile}: build SyncObj through ReplicatedLog")
    return journal


def _use_our_journal() -> None:
    if PYSYNCOBJ_VERSION != PYSYNCOBJ_PINNED:
        raise RuntimeError(f"raft.py is written for pysyncobj {PYSYNCOBJ_PINNED}, not {PYSYNCOBJ_VERSION}")
    pysyncobj_syncobj.createJournal = _create_journal


class _DurableTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCP transport; a node's journal reaches the disk before it answers a peer.

    Every acknowledgement a follower sends goes through `send`, so writing (and in
    durability "fsync", fsyncing) pending appends here is a group commit: one write per
    batch, and no follower acknowledges an entry it has not persisted. A leader's appends
    leave first and its own fsync runs while they travel (Raft thesis 10.2.1): its entry
    counts towards a commit only at the next tick, and every tick starts with the flush
    (`_GuardedSyncObj._onTick`), so it is never counted before it is durable
    (store/DESIGN.md, "Durability").
    """

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        # Before TCPTransport.__init__, which may already accept connections.
        self._sq_guard = _peerguard.PeerGuard(_peerguard.resolve(n.address for n in otherNodes))
        self._sq_swept_at = 0.0
        TCPTransport.__init__(self, syncObj, selfNode, otherNodes)

    def send(self, node: Any, message: Any) -> bool:
        handover = getattr(self._syncObj, "handover", None)
        if isinstance(handover, _transfer.Handover):
            handover.tag(message)
        journal = getattr(self._syncObj, "_SyncObj__raftLog", None)
        if isinstance(journal, RaftJournal) and message.get("type") != "append_entries":
            journal.before_send()
        return bool(TCPTransport.send(self, node, message))

    # pysyncobj calls these when the membership changes (dynamic membership, or members
    # loaded with a snapshot): a new member's connections are admitted, a removed one's not.
    def addNode(self, node: Any) -> None:
        TCPTransport.addNode(self, node)
        self._sq_guard.allow_only(_peerguard.resolve(str(n.address) for n in self._nodes))

    def dropNode(self, node: Any) -> None:
        TCPTransport.dropNode(self, node)
        self._sq_guard.allow_only(_peerguard.resolve(str(n.address) for n in self._nodes))

    # The Raft port before authentication (store/_peerguard.py).
    def _onNewIncomingConnection(self, conn: Any) -> None:
        if self._sq_guard.admit(conn, len(self._unknownConnections)):
            TCPTransport._onNewIncomingConnection(self, conn)

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:
        TCPTransport._onIncomingMessageReceived(self, conn, message)
        if conn not in self._unknownConnections:
            self._sq_guard.authenticated(conn)

    def _onDisconnected(self, conn: Any) -> None:
        self._sq_guard.forget(conn)
        TCPTransport._onDisconnected(self, conn)

    def sweep_unauthenticated(self) -> None:
        """On the tick thread, a few times a second: close handshakes that took too long."""
        now = raft_clock()
        if now - self._sq_swept_at >= _peerguard.UNAUTHENTICATED_DEADLINE_S / 4:
            self._sq_swept_at = now
            self._sq_guard.sweep(self._unknownConnections)


_PROGRESS = {
    Progress.IDLE: SERIALIZER_STATE.NOT_SERIALIZING,
    Progress.RUNNING: SERIALIZER_STATE.SERIALIZING,
    Progress.SUCCEEDED: SERIALIZER_STATE.SUCCESS,
    Progress.FAILED: SERIALIZER_STATE.FAILED,
}

# pysyncobj compacts when EITHER its entry count OR its time threshold is passed, in the
# tick thread; both are set out of reach and `ReplicatedLog._after_tick` decides.
_NEVER_ENTRIES = 2**62
_NEVER_S = 1e12


@dataclass(frozen=True, slots=True)
class RaftStatus:
    is_leader: bool
    leader_raft_address: str | None
    term: int
    commit_index: int
    last_applied: int
    has_quorum: bool
    # The leader's commit index as this node last heard it (its own, on the leader); None
    # until it heard from a leader since it started.
    leader_commit_index: int | None = None
    journal_bytes: int = 0
    journal_entries: int = 0
    snapshot_index: int = 0
    snapshot_bytes: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    # New (term, leader) pairs seen since start; the latest snapshot's capture + write time.
    leader_changes: int = 0
    snapshot_seconds: float = 0.0
    # Packed entries this node proposed, and the commands in them (store/_outbox.py).
    packed_proposed: int = 0
    packed_commands_proposed: int = 0


# MemberList copies pysyncobj's membership sets from a gRPC thread; a copy that races the
# tick thread is taken again at most this often.
MEMBER_COPY_TRIES = 5


@dataclass(frozen=True, slots=True)
class MemberView:
    raft_address: str
    connected: bool
    match_index: int | None  # on the leader only


def _ignore(_seconds: float) -> None:
    pass


class ReplicatedLog:
    def __init__(
        self, config: NodeConfig, machine: SessionMachine, on_applied: Callable[[int], None] = lambda _: None
    ) -> None:
        self._config = config
        self._machine = machine
        self._lock = threading.Lock()
        self._consumer = _Replicated(machine, self._lock, on_applied)
        r = config.cluster.raft
        data = config.data_dir
        if (data / "raft.journal").exists() and not (data / "raft.log").exists():
            raise ConfigError(
                f"{data} holds a journal in pysyncobj's format (raft.journal) from an older release; "
                "this release cannot read it: let the node catch up from an empty data directory"
            )
        _use_our_journal()
        log_path = data / "raft.log"
        self._journal = RaftJournal(log_path, data / "raft.meta", fsync=r.durability == "fsync")
        self._snapshots = Snapshotter(
            data / "raft.snapshot", self._capture, serialize_in_pieces, self._consumer._deserialize
        )
        self._startup_snapshot = self._snapshots.path.exists()
        with _pending_journals_lock:
            _pending_journals[str(log_path)] = self._journal
        conf = SyncObjConf(
            password=read_secret(config.cluster.raft_password_file),
            bindAddress=config.node.raft_address,
            useFork=False,  # forking a process that runs gRPC threads is unsafe
            journalFile=str(log_path),
            fullDumpFile=str(self._snapshots.path),
            raftMinTimeout=r.election_min_s,
            raftMaxTimeout=r.election_max_s,
            appendEntriesPeriod=r.append_entries_period_s,
            autoTickPeriod=r.tick_period_s,
            connectionRetryTime=r.connection_retry_s,
            connectionTimeout=r.connection_timeout_s,
            leaderFallbackTimeout=r.leader_fallback_s,
            logCompactionMinEntries=_NEVER_ENTRIES,
            logCompactionMinTime=_NEVER_S,
            logCompactionBatchSize=r.snapshot_chunk_bytes,
            appendEntriesBatchSizeBytes=r.append_batch_bytes,
            serializer=self._begin_snapshot,
            serializeChecker=lambda: _PROGRESS[self._snapshots.check()],
            deserializer=self._load_snapshot,
            commandsQueueSize=r.commands_queue_size,
            # Live membership (store/DESIGN.md, "Membership"): the defects are fixed above.
            dynamicMembershipChange=r.dynamic_membership,
        )
        _peerguard.install()
        # A read not confirmed within the apply timeout fails (NoLeader: nothing was read).
        self._reads = ReadIndex(timeout_s=config.cluster.server.apply_timeout_s)
        # Readers arriving before the tick thread takes the open batch share its future;
        # once taken (its round may already be on the wire) a new batch opens.
        self._reads_lock = threading.Lock()
        self._open_reads: list[Waiter] = []
        self._open_batch: asyncio.Future[int] | None = None
        # Proposals wait here for the tick thread, which packs them (store/_outbox.py).
        self._outbox = Outbox(
            self._consumer.propose,
            success=FAIL_REASON.SUCCESS,
            failure=translate_failure,
            queue_full=FAIL_REASON.QUEUE_FULL,
            may_pack=self._may_pack,
            max_waiting=r.commands_queue_size,
            limits=PackLimits(max_commands=r.pack_commands, max_bytes=r.pack_bytes),
        )
        self._sync = _GuardedSyncObj(
            config.node.raft_address,
            [p.raft_address for p in config.peers],
            conf=conf,
            consumers=[self._consumer],
            # A tick longer than half the shortest election timeout counts as "busy".
            busy_tick_s=r.election_min_s / 2,
            # A won pre-vote round allows an election for at most this long (next tick).
            pre_vote=PreVote(len(config.peers) + 1, win_valid_s=r.election_min_s) if r.pre_vote else None,
            election_min_s=r.election_min_s,
            reads=self._reads,
            take_reads=self._take_reads,
            lease_s=self._lease_s,
            send_proposals=self._outbox.flush,
            transportClass=_DurableTransport,
        )
        # The Raft members' addresses (this node first), renewed by the tick thread after
        # every tick: a membership change takes effect there (at append, pysyncobj).
        self._member_addresses = (config.node.raft_address, *(p.raft_address for p in config.peers))
        # Latency hooks (store/metrics.py sets them): proposal -> apply, read-index waits.
        # These and the leader watch are set before the tick callback that reads them.
        self.observe_proposal: Callable[[float], None] = _ignore
        self.observe_read_index: Callable[[float], None] = _ignore
        self._seen_leader: tuple[int, Any] = (0, None)
        self.leader_changes = 0
        # Backups waiting for a capture between two applies (`capture_applied`); at most one
        # per save, and a node runs one save at a time (store/backup_stream.py).
        self._capture_requests: list[Callable[[Capture, int, int], None]] = []
        self._sync.addOnTickCallback(self._after_tick)

    # ------------------------------------------------------ snapshots (tick thread)
    def _begin_snapshot(self, tmp_file: str, data: Any) -> None:
        last, prev, cluster = data
        self._snapshots.begin(tmp_file, (last, prev, self._sync.snapshot_members(int(last[1]), cluster)))

    def _capture(self) -> Any:
        with self._lock:
            return self._machine.capture()

    def _load_snapshot(self, file_name: str) -> tuple[Any, ...]:
        """pysyncobj's deserializer: at start-up (our own snapshot) or on install from the leader."""
        install = not self._startup_snapshot
        self._startup_snapshot = False
        try:
            snap = self._snapshots.load(file_name, install=install)
        except BaseException:
            # pysyncobj would log this and go on with a journal that starts after a state
            # it never loaded: every later entry would apply to the wrong state.
            log.critical("cannot load snapshot %s, stopping this node", file_name, exc_info=True)
            os._exit(EXIT_UNDECODABLE)
        if not install and self._journal.align_to_snapshot(snap.prev, snap.last):
            # Expected after any restart: compaction keeps entries before the snapshot for
            # lagging followers, and pysyncobj's loader needs the log to start at its boundary.
            log.info("dropped journal entries before the snapshot at index %d on load", snap.last[1])
        # Without this node: pysyncobj compares the members to its own Node object, never
        # equal to an address, so a snapshot made it count itself as a peer (seen on a node
        # that installed one after it was added: 5 members in a cluster of 4).
        own = self._config.node.raft_address
        return (snap.last, snap.prev, [m for m in snap.members if m != own])

    def _lease_s(self) -> float:
        """On the tick thread (the only writer of the state): the lease a read round gives.

        Only once every member advertised LEASE_LEVEL, i.e. runs code that refuses votes
        while it hears from a leader: a member of an older release would vote at once.
        """
        r = self._config.cluster.raft
        if not r.lease_reads:
            return 0.0
        # Every current member, a joining one included: one that has not advertised yet
        # counts as level 1 (store/members.py), so no lease counts on it.
        names = _members.directory(self._config, self._machine.nodes)
        if self._machine.lowest_level(_members.member_ids(names, self._member_addresses)) < LEASE_LEVEL:
            return 0.0
        return r.election_min_s * LEASE_FRACTION

    def _may_pack(self) -> bool:
        """On the tick thread: whether every member can apply a packed entry (MULTI_LEVEL).

        Every current member (store/members.py): a joining one that has not advertised yet
        counts as level 1, so nothing is packed until it said it can apply it."""
        names = _members.directory(self._config, self._machine.nodes)
        return self._machine.lowest_level(_members.member_ids(names, self._member_addresses)) >= MULTI_LEVEL

    def _take_reads(self) -> list[Waiter]:
        with self._reads_lock:
            taken, self._open_reads, self._open_batch = self._open_reads, [], None
        return taken

    def _note_leader(self) -> None:
        """On the tick thread: log and count every new (term, leader) this node sees."""
        leader = self._sync._SyncObj__raftLeader
        if leader is None:
            return
        term = int(self._sync._getTerm())
        if (term, leader) == self._seen_leader:
            return
        self._seen_leader = (term, leader)
        self.leader_changes += 1
        address = str(leader.address)
        who = "this node" if address == self._config.node.raft_address else self.node_id_of(address)
        log.info("leader of term %d: %s", term, who)

    def _after_tick(self) -> None:
        others = self._sync._SyncObj__otherNodes
        if len(others) != len(self._member_addresses) - 1 or self._sync.membership_changed:
            self._sync.membership_changed = False
            own = self._config.node.raft_address
            self._member_addresses = (own, *sorted(str(n.address) for n in others))
            log.info("raft members now: %s", ", ".join(self.member_ids()))
        self._note_leader()
        if self._capture_requests:
            self._serve_captures()
        self._sync.read_tick(self._take_reads())
        transport = getattr(self._sync, "_SyncObj__transport", None)
        if isinstance(transport, _DurableTransport):
            transport.sweep_unauthenticated()
        # A leader's appends of this tick are sent (and synced) next tick anyway; syncing
        # now costs nothing more and covers a single-node cluster, which sends nothing.
        self._journal.before_send()
        if self._snapshots.running:
            return
        r = self._config.cluster.raft
        last_applied = int(getattr(self._sync, "_SyncObj__raftLastApplied"))  # noqa: B009 - mangled
        addresses = sorted(self._member_addresses)  # the stagger follows the membership
        if compaction_due(
            entries=len(self._journal),
            size_bytes=self._journal.size_bytes,
            since_snapshot=last_applied - self._snapshots.snapshot_index,
            last_applied=last_applied,
            rank=addresses.index(self._config.node.raft_address),
            members=len(addresses),
            every_entries=r.compaction_entries,
            max_bytes=r.journal_max_bytes,
        ):
            # Keep a quarter period of entries, at most an eighth of the byte bound.
            average = self._journal.size_bytes / max(1, len(self._journal))
            self._journal.retain = int(min(r.compaction_entries // 4, r.journal_max_bytes / 8 / average))
            self._sync._forceLogCompaction()

    def _serve_captures(self) -> None:
        """On the tick thread, after this tick's applies: the state and its index agree here.

        pysyncobj advances its last-applied index after the apply callback returns, outside
        the state lock, so a capture taken from another thread could include an entry the
        index does not count yet. The tick thread is the only one that applies.
        """
        with self._reads_lock:
            requests, self._capture_requests = self._capture_requests, []
        capture = self._capture()
        index = int(getattr(self._sync, "_SyncObj__raftLastApplied"))  # noqa: B009 - mangled
        term = int(self._sync._getTerm())
        for deliver in requests:
            deliver(capture, index, term)

    async def capture_applied(self) -> tuple[Capture, int, int]:
        """A capture of the state and the log index (and term) it includes exactly."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Capture, int, int]] = loop.create_future()

        def deliver(capture: Capture, index: int, term: int) -> None:  # tick thread
            def settle() -> None:
                if not future.done():
                    future.set_result((capture, index, term))

            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(settle)

        with self._reads_lock:
            self._capture_requests.append(deliver)
        self._sync.wake()
        return await future

    # --------------------------------------------------------------- writes
    def submit(self, entry: bytes) -> asyncio.Future[Reply]:
        """Propose one entry; the future resolves on apply here, or with a StoreError.

        The tick thread sends it, packed with whatever else waits (store/_outbox.py)."""
        future: asyncio.Future[Reply] = self._outbox.put(entry)
        self._sync.wake()
        return future

    async def propose(self, entry: bytes, timeout_s: float) -> Reply:
        """Propose and wait for apply, at most `timeout_s`, and only while still leader.

        A leader cut off from its peers keeps its pending commands until it steps down
        (`leader_fallback_s`) and beyond; waiting out the whole timeout would hold clients
        on a node that cannot commit. Losing leadership ends the wait: the outcome is
        unknown, and the client retries elsewhere with the same request id.
        """
        future = self.submit(entry)
        # Whatever happens to it later, nobody may be left to read its outcome.
        future.add_done_callback(_retrieve)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout_s
        # One timer per proposal, re-armed every LEADERSHIP_CHECK_S while it waits, ends the
        # wait by failing the future (the outbox skips a future already done). An
        # `asyncio.wait` per check cost a coroutine, a waiter future, a set, a done callback
        # and a timer each time, on the leader's busiest thread, and writes at 64 clients
        # wait 40-80 ms: one to two checks each.
        timer: list[asyncio.TimerHandle] = []  # the one pending check

        def check() -> None:
            if future.done():
                return
            now = loop.time()
            if now >= deadline:
                future.set_exception(
                    OutcomeUnknown(
                        f"the command was not applied within {timeout_s:g} s; it may still commit. "
                        "Retry with the same request id"
                    )
                )
            elif not self.is_leader():
                future.set_exception(
                    OutcomeUnknown(
                        "this node lost leadership before the command was known to commit; "
                        "retry with the same request id"
                    )
                )
            else:
                timer[0] = loop.call_at(min(deadline, now + LEADERSHIP_CHECK_S), check)

        timer.append(loop.call_at(min(deadline, started + LEADERSHIP_CHECK_S), check))
        try:
            # A cancelled caller cancels the future: the outbox skips it, the proposal may
            # still commit (its outcome was unknown to that caller before too).
            reply = await future
        finally:
            timer[0].cancel()
        self.observe_proposal(loop.time() - started)
        return reply

    async def read_index(self) -> int:
        """Wait until this node's state includes every entry committed before this call.

        ReadIndex (store/_readindex.py): on the leader, one confirmation round shared by
        every read that arrived before it was sent; on a follower, an index asked from the
        leader. No log entry is written. Returns the read index (applied here).
        """
        started = time.perf_counter()
        with self._reads_lock:
            batch = self._open_batch
            if batch is None:
                loop = asyncio.get_running_loop()
                batch = self._open_batch = loop.create_future()
                # Mark the outcome retrieved even if every reader was cancelled meanwhile.
                batch.add_done_callback(lambda f: f.cancelled() or f.exception())

                def settle(index: int | None, reason: str | None, fut: asyncio.Future[int] = batch) -> None:
                    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                        loop.call_soon_threadsafe(_settle_read, fut, index, reason)

                self._open_reads.append(settle)
                self._sync.wake()
        # No timer per reader: ReadIndex fails a batch after `timeout_s` on the tick thread.
        # The shield keeps one reader's cancellation from cancelling the batch of all.
        index = await asyncio.shield(batch)
        self.observe_read_index(time.perf_counter() - started)
        return index

    # ---------------------------------------------------------------- reads
    def read(self, fn: Callable[[SessionMachine], _T]) -> _T:
        with self._lock:
            return fn(self._machine)

    def status(self) -> RaftStatus:
        s = self._sync.getStatus()
        leader = s.get("leader")
        return RaftStatus(
            is_leader=bool(self._sync._isLeader()),
            leader_raft_address=leader.address if leader is not None else None,
            term=int(s.get("raft_term", 0)),
            commit_index=int(s.get("commit_idx", 0)),
            last_applied=int(s.get("last_applied", 0)),
            has_quorum=bool(s.get("has_quorum", False)),
            leader_commit_index=None if s.get("leader_commit_idx") is None else int(s["leader_commit_idx"]),
            journal_bytes=self._journal.size_bytes,
            journal_entries=len(self._journal),
            snapshot_index=self._snapshots.snapshot_index,
            snapshot_bytes=self._snapshots.snapshot_bytes,
            snapshots_taken=self._snapshots.snapshots_taken,
            snapshots_installed=self._snapshots.snapshots_installed,
            leader_changes=self.leader_changes,
            snapshot_seconds=self._snapshots.last_capture_s + self._snapshots.last_write_s,
            packed_proposed=self._outbox.packed_entries,
            packed_commands_proposed=self._outbox.packed_commands,
        )

    def leader_heard_within(self, seconds: float) -> bool:
        """Whether this node leads, or heard from a leader of its term within `seconds`.

        A leader that loses its majority steps down after raft.leader_fallback_s (pysyncobj);
        a cut-off follower keeps its old leader on record (PreVote stops it campaigning), so
        the time since the leader's last message, not the leader field, says it is alone.
        """
        return self.is_leader() or self._sync._gate.heard_from_leader_within(seconds)

    async def transfer_leadership(self, target: str | None, timeout_s: float) -> str | None:
        """Hand leadership to `target` (a raft address; None: the most caught-up follower).

        Returns the new leader's raft address once this node no longer leads (None if no
        leader is known by `timeout_s`). Raises when this node still leads: the transfer
        did not happen, every held proposal goes on here.
        """
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[str | None] = loop.create_future()

        def done(reason: str | None) -> None:  # the tick thread, or this thread if refused at once
            def settle() -> None:
                if not outcome.done():
                    outcome.set_result(reason)

            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(settle)

        deadline = loop.time() + timeout_s
        self._sync.handover.request(target, timeout_s, done)
        self._sync.wake()
        # The tick thread answers by the handover's own deadline; the margin covers a slow tick.
        try:
            reason = await asyncio.wait_for(outcome, timeout_s + 1.0)
        except TimeoutError:
            reason = _transfer.TIMED_OUT
        if reason == _transfer.NOT_LEADER:
            raise NotLeader(f"leadership transfer refused: {reason}", None)
        if reason == _transfer.UNKNOWN_TARGET:
            raise InvalidArgument(f"leadership transfer refused: {reason}")
        if reason is not None:
            raise NotReady(f"leadership transfer failed: {reason}")
        own = self._config.node.raft_address
        while True:  # bounded by the deadline: who leads now, for the caller's answer
            leader = self.leader_raft_address()
            if leader is not None and leader != own:
                return leader
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(LEADERSHIP_CHECK_S / 5)

    def members(self) -> tuple[MemberView, ...]:
        """The Raft membership as pysyncobj holds it (this node first), for MemberList.

        Read from another thread than the tick thread that changes these sets: a copy that
        races a change raises, and is simply taken again (a few times at most).
        """
        sync = self._sync
        for _ in range(MEMBER_COPY_TRIES):
            try:
                others = tuple(sync._SyncObj__otherNodes)
                connected = set(sync._SyncObj__connectedNodes)
                match = dict(sync._SyncObj__raftMatchIndex) if sync._isLeader() else None
                break
            except RuntimeError:  # "changed size during iteration"
                continue
        else:
            raise NotReady("the membership changed while being read; retry")
        own = MemberView(self._config.node.raft_address, True, int(sync._SyncObj__getCurrentLogIndex()))
        views = [own if match is not None else MemberView(own.raft_address, True, None)]
        for node in others:
            index = None if match is None else int(match.get(node, 0))
            views.append(MemberView(str(node.address), node in connected, index))
        return tuple(views)

    async def change_membership(self, kind: str, raft_address: str, timeout_s: float) -> None:
        """On the leader: add (`_membership.ADD`) or remove a Raft member, and wait until the
        change is applied here (committed). pysyncobj appends it as a membership entry that
        takes effect at append on every node; `_GuardedSyncObj` allows one at a time."""
        if not self._sync._SyncObj__conf.dynamicMembershipChange:
            raise NotReady("live membership is off on this node (raft.dynamic_membership)")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()

        def on_result(_result: Any, err: int) -> None:  # the tick thread
            def settle() -> None:
                if not future.done():
                    future.set_result(err)

            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(settle)

        if kind == _membership.ADD:
            self._sync.addNodeToCluster(raft_address, callback=on_result)
        else:
            self._sync.removeNodeFromCluster(raft_address, callback=on_result)
        self._sync.wake()
        try:
            err = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise OutcomeUnknown(
                f"the membership change was not applied within {timeout_s:g} s; it may still commit: "
                "check `member list` before trying again"
            ) from None
        if err == FAIL_REASON.REQUEST_DENIED:
            raise NotReady(
                "membership change refused: another change is not committed yet, or this leader's "
                "first entry is not applied yet; nothing changed, retry"
            )
        if err != FAIL_REASON.SUCCESS:
            raise translate_failure(err)

    @property
    def member_addresses(self) -> tuple[str, ...]:
        """The Raft members' addresses, this node first (as of the last tick)."""
        return self._member_addresses

    def names(self) -> dict[str, _members.Name]:
        """Raft address -> node id and gRPC address (store/members.py)."""
        with self._lock:
            nodes = dict(self._machine.nodes)
        return _members.directory(self._config, nodes)

    def member_ids(self) -> list[str]:
        return _members.member_ids(self.names(), self._member_addresses)

    def node_id_of(self, raft_address: str) -> str:
        name = self.names().get(raft_address)
        return name.node_id if name is not None else raft_address

    def grpc_address_of(self, raft_address: str | None) -> str | None:
        """The gRPC address clients reach the member at `raft_address` by (None: unknown)."""
        name = self.names().get(raft_address) if raft_address else None
        return name.grpc_address if name is not None else None

    async def propose_anywhere(self, entry: bytes, timeout_s: float) -> Reply:
        """Propose from any node (a follower's pysyncobj forwards it to the leader)."""
        try:
            return await asyncio.wait_for(self.submit(entry), timeout_s)
        except TimeoutError:
            raise OutcomeUnknown(f"not applied within {timeout_s:g} s") from None

    def is_leader(self) -> bool:
        return bool(self._sync._isLeader())

    def term(self) -> int:
        return int(self._sync._getTerm())

    def leader_raft_address(self) -> str | None:
        leader = self._sync._getLeader()
        return str(leader.address) if leader is not None else None

    @property
    def read_counts(self) -> tuple[int, int, int, int]:
        """(rounds sent, rounds confirmed, reads confirmed, of them by lease) on this node."""
        r = self._reads
        return r.rounds_sent, r.rounds_confirmed, r.reads_confirmed, r.reads_by_lease

    def close(self) -> None:
        counts = " ".join(f"{k}={v}" for k, v in self._sync.counts.items())
        log.info("raft fix counts at stop: %s", counts)
        sent, confirmed, reads, by_lease = self.read_counts
        log.info(
            "read index at stop: %d rounds sent, %d confirmed, %d reads (%d by lease)",
            sent,
            confirmed,
            reads,
            by_lease,
        )
        self._sync.destroy()


def seed_snapshot(
    data_dir: Path, capture: Capture, *, index: int, term: int, members: Sequence[str]
) -> tuple[int, str]:
    """Make `data_dir` (a new node's, empty) start from `capture` as of log `index` and `term`.

    For a cluster restored from a backup (cluster/_cli_snapshot.py): every node gets the same
    `raft.snapshot`, whose boundary entries are pysyncobj no-ops at `index - 1` and `index`,
    so the nodes agree on their log's head and the first leader appends after it. Returns
    the file's size and the state's digest (what `Status.state_digest` will say).
    """
    if any((data_dir / name).exists() for name in ("raft.log", "raft.meta", "raft.snapshot")):
        raise ConfigError(f"{data_dir} already holds a node's Raft files; a restore needs empty data dirs")
    noop = bytes([_COMMAND_TYPE.NO_OP])
    at = max(index, 2)  # pysyncobj's log starts at index 1: two boundary entries need 1 and 2
    path = data_dir / "raft.snapshot"
    tmp = path.with_name(path.name + ".restore")
    sha = hashlib.sha256()

    def hashed() -> Iterator[bytes]:
        for piece in serialize_in_pieces(capture):
            sha.update(piece)
            yield piece

    size = write_snapshot(tmp, (noop, at, term), (noop, at - 1, term), tuple(sorted(members)), hashed())
    os.replace(tmp, path)
    fsync_dir(data_dir)
    return size, sha.hexdigest()

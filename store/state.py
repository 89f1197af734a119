"""The session state machine: pure, deterministic, and the only owner of session rules.

`SessionMachine.apply(entry)` is a function of (state, entry) alone. It reads no clock (time
is the leader-stamped `now_ms`, clamped monotonic in log order), draws no randomness (the
proposer stamps handles), does no I/O and never iterates a set: replicas that apply the
same log hold the same state and produce byte-identical snapshots.

Domain outcomes (not found, version conflict, quota...) are returned as `Reply` values,
never raised: pysyncobj retries a raising apply forever and wedges the node. Rules kept here:
- a command on a missing, expired or deleted session is refused, so nothing resurrects;
- the absolute deadline is fixed at create: no touch, rotate or failover extends it;
- a principal's index changes in the same command as its sessions, so it cannot leak;
- a (client id, sequence) retry gets the first answer again instead of applying twice
  (`dedup.py`);
- from command level 5 (`secops.py`): an ended session's token hash is refused for a new
  session until its old absolute deadline, a rotated-away token serves only within the
  grace (a later use is a reuse), and a disabled principal gets no new session.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import replace

import msgpack

from . import _packing
from . import commands as c
from . import events as ev
from . import validation as v
from .config import Limits, limits_from_pairs, limits_to_pairs
from .dedup import DedupTable
from .errors import ConfigError
from .replies import Code, Reply, SessionView
from .secops import Ended, SecurityState, Tombstone, clamp_timeouts
from .session import Session, pack_attributes
from .snapshot_format import READABLE_FORMATS, Capture

# Most members whose command level (and identity) the state keeps (a cluster has 3 to 7).
MAX_MEMBERS = 64
# Longest node id or address a MemberIdentity may carry (the service checks them first).
MAX_IDENTITY_CHARS = 256
# SessionMachine.events: the keys store/metrics.py turns into counters.
EVENTS = (
    "created",
    "rotated",
    "evicted",
    "touched",
    "deleted",
    "revoked",
    "expired_idle",
    "expired_absolute",
    # Level 5 (secops.py): sessions ended by a disable or a detected reuse, reuses detected,
    # creates/rotates refused for an ended session's token hash.
    "ended_disabled",
    "ended_reuse",
    "reuse_detected",
    "tombstone_refused",
)


# The lifecycle event each way of ending emits (store/events.py); ROTATED emits "rotated"
# from _rotate itself, once the session lives on under its new hash.
_EVENT_OF_END: dict[Ended, tuple[str, str]] = {
    Ended.DELETED: (ev.Kind.DELETED, ""),
    Ended.REVOKED: (ev.Kind.REVOKED, "principal"),
    Ended.EVICTED: (ev.Kind.REVOKED, "principal_cap"),
    Ended.DISABLED: (ev.Kind.REVOKED, "principal_disabled"),
    Ended.REUSE: (ev.Kind.REVOKED, "reuse"),
    Ended.EXPIRED_IDLE: (ev.Kind.EXPIRED, "idle"),
    Ended.EXPIRED_ABSOLUTE: (ev.Kind.EXPIRED, "absolute"),
}


class SessionMachine:
    def __init__(self, limits: Limits, supported_level: int = c.SUPPORTED_LEVEL) -> None:
        # Until a Configure command is applied, the limits are the code's (identical on
        # every node of one release), never a node's own file.
        self.limits = limits
        self.configured = False
        self.supported_level = supported_level
        self.now_ms = 0
        self.sessions: dict[bytes, Session] = {}
        self.by_handle: dict[str, bytes] = {}
        # principal -> its sessions' token hashes in insertion order. A tuple, not a dict:
        # most principals have one or two sessions, and a tuple of one costs 48 bytes where
        # the smallest dict costs 232 (the cap bounds a tuple's rebuild cost).
        self.by_principal: dict[str, tuple[bytes, ...]] = {}
        # (deadline_ms, token_hash); may hold stale entries, see _sweep().
        self._expiry: list[tuple[int, bytes]] = []
        self._dedup = DedupTable(limits.max_dedup_clients, limits.dedup_ttl_ms)
        # node id -> the highest command level it advertised (commands.MemberLevel).
        self.member_levels: dict[str, int] = {}
        # node id -> (raft address, grpc address) of nodes added live (commands.MemberIdentity;
        # the first members are named by cluster.json): store/members.py reads it.
        self.nodes: dict[str, tuple[str, str]] = {}
        # What this node applied since it started, for store/metrics.py: local tallies,
        # never replicated state, never in a snapshot (restore keeps them), never read by apply.
        self.events: dict[str, int] = dict.fromkeys(EVENTS, 0)
        # The lifecycle event ring (store/events.py): replicated state, in the snapshot;
        # None until an EnableEvents command is applied, and then apply emits nothing.
        self.lifecycle: ev.EventRing | None = None
        # Level 5: tombstones, rotation grace, disabled principals (secops.py).
        self.sec = SecurityState()
        # Packed entries (store/_packing.py) applied here and the commands they carried:
        # local tallies like `events`, for Status and the tests that count packing.
        self.packed_entries = 0
        self.packed_commands = 0

    # ----------------------------------------------------------------- apply
    def apply_entry(self, entry: bytes) -> Reply | list[Reply]:
        """Apply one Raft log entry: a plain command (its Reply) or a packed one (a Reply per
        inner command, in order, each applied exactly as its own entry would have been).
        Raises only UndecodableEntry (the node must stop)."""
        raw = c.unpack(entry)
        if isinstance(raw, dict) and raw.get("op") == _packing.OP:
            inner = _packing.inner_commands(raw, self.supported_level)
            self.packed_entries += 1
            self.packed_commands += len(inner)
            return [self._apply(c.decode_map(m, self.supported_level)) for m in inner]
        return self._apply(c.decode_map(raw, self.supported_level))

    def apply(self, entry: bytes) -> Reply:
        """Apply one plain command entry. Raises only UndecodableEntry (the node must stop)."""
        return self._apply(c.decode(entry, self.supported_level))

    def _apply(self, cmd: c.Command) -> Reply:
        self.now_ms = max(self.now_ms, cmd.now_ms)
        if not self.sec.active and c.level_of(cmd) >= c.SECURITY_OPS_LEVEL:
            # Every member applies level 5 (the leader proposed this): switch its rules on here.
            self.sec.active = True
        cid = cmd.client_id
        fingerprint = None
        if cid is not None:
            epoch = cmd.client_epoch_ms
            if epoch is not None:
                if epoch > self.now_ms:
                    return Reply(Code.INVALID, "request_id.client_epoch_ms is later than the cluster's time")
                fingerprint = c.fingerprint(cmd.op)  # level 2: the id is bound to its request
            answer = self._dedup.answer(cid, cmd.sequence, epoch, self.now_ms, fingerprint)
            if answer is not None:
                return answer
        reply = self._dispatch(cmd.op)
        if reply.code is Code.OK:
            self._tally(cmd.op, reply)
        if cid is not None and reply.code is not Code.RETRY:
            self._dedup.remember(cid, cmd.sequence, reply, self.now_ms, fingerprint)
        return reply

    def _dispatch(self, op: c.Op) -> Reply:
        if isinstance(op, c.Create):
            return self._create(op)
        if isinstance(op, c.Touch):
            return self._touch(op)
        if isinstance(op, c.Update):
            return self._update(op)
        if isinstance(op, c.Rotate):
            return self._rotate(op)
        if isinstance(op, c.Delete):
            return self._delete(op)
        if isinstance(op, c.RevokePrincipal):
            return self._revoke(op)
        if isinstance(op, c.Expire):
            return Reply(Code.OK, count=self._sweep(op.limit))
        if isinstance(op, c.Configure):
            return self._configure(op)
        if isinstance(op, c.MemberLevel):
            return self._member_level(op)
        if isinstance(op, c.MemberIdentity):
            return self._member_identity(op)
        if isinstance(op, c.Barrier | c.SecurityOn):
            return Reply(Code.OK)
        if isinstance(op, c.EnableEvents):
            return self._enable_events(op)
        if isinstance(op, c.SetPrincipalEnabled):
            return self._set_enabled(op)
        if isinstance(op, c.ReuseDetected):
            return self._reuse_detected(op)
        raise AssertionError(f"no handler for {type(op).__name__}")  # decode() admits no other

    def _tally(self, op: c.Op, reply: Reply) -> None:
        events = self.events
        if isinstance(op, c.Create | c.Rotate):
            events["created" if isinstance(op, c.Create) else "rotated"] += 1
            events["evicted"] += len(reply.handles)
        elif isinstance(op, c.Touch):
            events["touched"] += 1
        elif isinstance(op, c.Delete):
            events["deleted"] += reply.existed
        elif isinstance(op, c.RevokePrincipal):
            events["revoked"] += len(reply.handles)

    @property
    def exactly_once_clients(self) -> int:
        return len(self._dedup)

    def event_counts(self) -> dict[str, int]:
        """The tallies above plus retries answered from the exactly-once table and packing's."""
        return {
            **self.events,
            "exactly_once_hits": self._dedup.hits,
            "packed_entries": self.packed_entries,
            "packed_commands": self.packed_commands,
        }

    def _configure(self, op: c.Configure) -> Reply:
        if op.seed and self.configured:
            return Reply(Code.OK, "already configured; the seed is ignored")
        try:
            limits = limits_from_pairs(op.limits)
        except ConfigError as exc:
            return Reply(Code.INVALID, str(exc))
        # Level-5 limits may be left out (at their defaults): older releases never sent them.
        missing = (
            {name for name, _ in limits_to_pairs(limits)} - {name for name, _ in op.limits} - c.LATER_LIMITS
        )
        if missing:
            return Reply(
                Code.INVALID, f"configure must set every limit; missing: {', '.join(sorted(missing))}"
            )
        self.limits = limits
        self.configured = True
        self._dedup.max_clients = limits.max_dedup_clients
        self._dedup.ttl_ms = limits.dedup_ttl_ms
        return Reply(Code.OK)

    def _enable_events(self, op: c.EnableEvents) -> Reply:
        problem = ev.check_bounds(op.max_count, op.max_bytes)
        if problem:
            return Reply(Code.INVALID, problem)
        ring = self.lifecycle
        if ring is None:
            self.lifecycle = ev.EventRing(op.max_count, op.max_bytes)
        elif (ring.max_count, ring.max_bytes) != (op.max_count, op.max_bytes):
            self.lifecycle = ring.resized(op.max_count, op.max_bytes)
        return Reply(Code.OK)

    def _emit(self, kind: str, s: Session, reason: str = "") -> None:
        """Record a lifecycle event (a handle and a principal: never a token hash or a value)."""
        ring = self.lifecycle
        if ring is not None:
            ring.append(self.now_ms, kind, s.handle, s.principal, reason)

    def _expired(self, s: Session) -> bool:
        """Remove an expired session and record why it ended; True if its lifetime ran out."""
        why = self._expired_why(s)
        self._remove(s, why)
        return why is Ended.EXPIRED_ABSOLUTE

    @staticmethod
    def _expired_why(s: Session) -> Ended:
        """Which deadline ended it: a property of the session alone, whenever it is removed."""
        absolute = s.absolute_deadline_ms <= s.last_access_ms + s.idle_timeout_ms
        return Ended.EXPIRED_ABSOLUTE if absolute else Ended.EXPIRED_IDLE

    def _member_level(self, op: c.MemberLevel) -> Reply:
        if not op.node_id or len(op.node_id) > self.limits.max_handle_bytes or op.level < 1:
            return Reply(Code.INVALID, "malformed member level")
        if op.node_id not in self.member_levels and len(self.member_levels) >= MAX_MEMBERS:
            return Reply(Code.QUOTA, f"at most {MAX_MEMBERS} members are tracked")
        self.member_levels[op.node_id] = op.level
        return Reply(Code.OK)

    def _member_identity(self, op: c.MemberIdentity) -> Reply:
        sizes = (len(op.node_id), len(op.raft_address), len(op.grpc_address))
        if not op.node_id or not op.raft_address or not op.grpc_address or max(sizes) > MAX_IDENTITY_CHARS:
            return Reply(Code.INVALID, "malformed member identity")
        if not op.joined:
            self.nodes.pop(op.node_id, None)
            return Reply(Code.OK)
        # An address names one node: a node replaced at the same address loses its old name.
        for other in sorted(k for k, (raft, _) in self.nodes.items() if raft == op.raft_address):
            del self.nodes[other]
        if op.node_id not in self.nodes and len(self.nodes) >= MAX_MEMBERS:
            return Reply(Code.QUOTA, f"at most {MAX_MEMBERS} member identities are kept")
        self.nodes[op.node_id] = (op.raft_address, op.grpc_address)
        return Reply(Code.OK)

    # ------------------------------------------------------------ operations
    def _create(self, op: c.Create) -> Reply:
        lim = self.limits
        problem = (
            v.check_token_hash(op.token_hash)
            or v.check_handle(op.handle, lim)
            or (v.check_principal(op.principal, lim) if op.principal is not None else None)
            or v.check_timeouts(op.idle_timeout_ms, op.absolute_timeout_ms, lim)
            or v.check_attributes(op.attributes, lim, "attributes")
            or self._check_session_bytes(op.attributes)
        )
        if problem:
            return Reply(*problem)
        self._drop_if_expired(op.token_hash)
        if op.token_hash in self.sessions:
            return Reply(Code.ALREADY_EXISTS, "a session with this token hash already exists")
        refusal = self._secops_refusal(op.token_hash, op.principal, "token_hash")
        if refusal is not None:
            return refusal
        if op.handle in self.by_handle:
            return Reply(Code.ALREADY_EXISTS, "a session with this handle already exists")
        if len(self.sessions) >= lim.max_sessions:
            # Expired sessions awaiting a sweep must not hold the store full.
            self._sweep(lim.expire_batch)
        if len(self.sessions) >= lim.max_sessions:
            return Reply(
                Code.QUOTA, f"the store holds {len(self.sessions)} sessions, the limit is {lim.max_sessions}"
            )
        evicted: tuple[str, ...] = ()
        if op.principal is not None:
            outcome = self._make_room(op.principal)
            if isinstance(outcome, Reply):
                return outcome
            evicted = outcome
        now = self.now_ms
        idle_ms, absolute_ms = clamp_timeouts(lim.timeout_profile, op.idle_timeout_ms, op.absolute_timeout_ms)
        s = Session(
            token_hash=op.token_hash,
            handle=op.handle,
            principal=op.principal,
            attributes=pack_attributes(dict(op.attributes).items()),
            created_ms=now,
            last_access_ms=now,
            idle_timeout_ms=idle_ms,
            absolute_deadline_ms=now + absolute_ms,
            version=1,
        )
        self._insert(s)
        self._emit(ev.Kind.CREATED, s)
        return Reply(Code.OK, session=s.view(False), handles=evicted)

    def _touch(self, op: c.Touch) -> Reply:
        s = self._live(op.token_hash, follow_grace=True)
        if isinstance(s, Reply):
            return s
        s = self._store(replace(s, last_access_ms=max(s.last_access_ms, self.now_ms)))
        return Reply(Code.OK, session=s.view(op.with_attributes))

    def _update(self, op: c.Update) -> Reply:
        problem = (
            v.check_token_hash(op.token_hash)
            or v.check_attributes(op.set, self.limits, "set")
            or v.check_update_names(op.set, op.delete, op.increment, self.limits)
            or v.check_rebase(op.increment, op.rebase, op.read_version)
        )
        if problem:
            return Reply(*problem)
        s = self._live(op.token_hash, follow_grace=True)
        if isinstance(s, Reply):
            return s
        if op.bound_handle is not None and op.bound_handle != s.handle:
            # Sealed under another handle's binding: storing them would make them unreadable.
            return Reply(
                Code.RETRY, "the session changed since this node read it; nothing was applied, retry"
            )
        if op.expected_version is not None and op.expected_version != s.version:
            return Reply(
                Code.VERSION_CONFLICT,
                f"expected version {op.expected_version}, the session is at version {s.version}",
                count=s.version,
            )
        if op.read_version is not None and op.read_version != s.version:
            # The rebased values were read at another version: the proposer plans again.
            return Reply(
                Code.RETRY, "the session changed since its counters were read; nothing was applied, retry"
            )
        idle_ms = s.idle_timeout_ms if op.idle_timeout_ms is None else op.idle_timeout_ms
        if op.idle_timeout_ms is not None:
            # The absolute deadline stays; only the idle rule and its limit apply.
            problem = v.check_idle_timeout(idle_ms, self.limits)
            if problem:
                return Reply(*problem)
            idle_ms = clamp_timeouts(self.limits.timeout_profile, idle_ms, 0)[0]
        outcome = self._merged(s, op)
        if isinstance(outcome, Reply):
            return outcome
        merged, counters = outcome
        s = self._store(
            replace(
                s,
                attributes=pack_attributes(merged.items()),
                version=s.version + 1,
                last_access_ms=max(s.last_access_ms, self.now_ms),
                idle_timeout_ms=idle_ms,
            )
        )
        self._emit(ev.Kind.UPDATED, s)
        # The reply carries the incremented counters' new values, nothing else.
        return Reply(Code.OK, session=replace(s.view(False), attributes=tuple(counters)))

    def _merged(self, s: Session, op: c.Update) -> tuple[dict[str, bytes], list[tuple[str, bytes]]] | Reply:
        """The attributes `op` leaves on `s` and the new counter values, or why it cannot."""
        merged = dict(s.pairs())
        for name in op.delete:
            merged.pop(name, None)
        merged.update(op.set)
        for name, base in op.rebase:  # a sealed value the proposer opened (guarded by read_version)
            merged[name] = str(base).encode("ascii")
        counters: list[tuple[str, bytes]] = []
        for name, delta in op.increment:
            current = v.parse_counter(name, merged.get(name))
            if isinstance(current, tuple):
                return Reply(*current)
            total = current + delta
            if not v.INT64_MIN <= total <= v.INT64_MAX:
                return Reply(Code.INVALID, f"incrementing {name!r} by {delta} overflows 64 bits")
            merged[name] = str(total).encode("ascii")
            counters.append((name, merged[name]))
        if len(merged) > self.limits.max_attributes_per_session:
            return Reply(
                Code.QUOTA,
                f"the update leaves {len(merged)} attributes, "
                f"the limit is {self.limits.max_attributes_per_session}",
            )
        problem = self._check_session_bytes(merged.items())
        if problem:
            return Reply(*problem)
        return merged, counters

    def lowest_level(self, node_ids: Iterable[str]) -> int:
        """The lowest command level these members advertised (BASE_LEVEL for a silent one)."""
        return min((self.member_levels.get(n, c.BASE_LEVEL) for n in node_ids), default=c.BASE_LEVEL)

    def precheck(self, op: c.Op) -> Reply | None:
        """Read-only: a size refusal apply would certainly give, so the proposer can skip the log.

        Apply checks again (the session may change in between); this only keeps requests
        that cannot succeed out of the journal. None means "propose it".
        """
        if isinstance(op, c.Create):
            problem = self._check_session_bytes(op.attributes)
            return Reply(*problem) if problem else None
        if isinstance(op, c.Update):
            s = self.sessions.get(op.token_hash)
            if s is None:
                return None
            outcome = self._merged(s, op)
            return outcome if isinstance(outcome, Reply) and outcome.code is Code.QUOTA else None
        return None

    def _rotate(self, op: c.Rotate) -> Reply:
        problem = v.check_token_hash(op.token_hash) or v.check_token_hash(op.new_token_hash, "new_token_hash")
        if not problem and op.principal is not None:
            problem = v.check_principal(op.principal, self.limits)
        if problem:
            return Reply(*problem)
        s = self._live(op.token_hash)
        if isinstance(s, Reply):
            return s
        self._drop_if_expired(op.new_token_hash)
        if op.new_token_hash in self.sessions:
            return Reply(Code.ALREADY_EXISTS, "a session with the new token hash already exists")
        evicted: tuple[str, ...] = ()
        new_principal = s.principal if op.principal is None else op.principal
        refusal = self._secops_refusal(op.new_token_hash, new_principal, "new_token_hash")
        if refusal is not None:
            return refusal
        if new_principal is not None and new_principal != s.principal:
            outcome = self._make_room(new_principal)
            if isinstance(outcome, Reply):
                return outcome
            evicted = outcome
        # A use of the old token within the grace is a request that was in flight, not a
        # reuse. Only a rotation that asked for it (a routine one) lets the old token serve
        # meanwhile: a login or privilege change ends it at once, or a token an attacker
        # fixed in the victim's browser would open the logged-in session (session fixation).
        serves = op.grace and op.principal is None
        self._remove(s, Ended.ROTATED, op.new_token_hash, self.limits.rotation_grace_ms, serves)
        s = replace(
            s,
            token_hash=op.new_token_hash,
            principal=new_principal,
            version=s.version + 1,
            last_access_ms=max(s.last_access_ms, self.now_ms),
        )
        self._insert(s)
        self._emit(ev.Kind.ROTATED, s)
        return Reply(Code.OK, session=s.view(False), handles=evicted)

    def _delete(self, op: c.Delete) -> Reply:
        key = op.token_hash
        if key is None and op.handle is not None:
            key = self.by_handle.get(op.handle)
        if (op.token_hash is None) == (op.handle is None):
            return Reply(Code.INVALID, "delete needs exactly one of token_hash or handle")
        if op.token_hash is not None and (problem := v.check_token_hash(op.token_hash)):
            return Reply(*problem)
        s = self._find(key, follow_grace=op.token_hash is not None) if key is not None else None
        if s is None:
            return Reply(Code.OK, existed=False)
        live = s.expiry_reason(self.now_ms) is None
        self._remove(s, Ended.DELETED if live else self._expired_why(s))
        return Reply(Code.OK, existed=live)

    def _revoke(self, op: c.RevokePrincipal) -> Reply:
        problem = v.check_principal(op.principal, self.limits)
        if problem:
            return Reply(*problem)
        revoked: list[str] = []
        # By handle: the index's order differs between a replayed and a restored replica,
        # and the events' order must not.
        for s in self._principal_sessions(op.principal):
            if s.handle == op.except_handle:
                continue
            if s.expiry_reason(self.now_ms) is None:
                revoked.append(s.handle)
                self._remove(s, Ended.REVOKED)
            else:
                self._expired(s)
        return Reply(Code.OK, handles=tuple(revoked))

    # ------------------------------------------------- level 5 (secops.py)
    def _secops_refusal(self, token_hash: bytes, principal: str | None, field: str) -> Reply | None:
        """Why a new session may not take `token_hash` / `principal` (None: it may)."""
        if self.sec.refuses(token_hash, self.now_ms) is not None:
            self.events["tombstone_refused"] += 1
            return Reply(
                Code.ALREADY_EXISTS,
                f"{field} belonged to a session that ended; it cannot name a new session "
                "before that session's absolute deadline",
            )
        if principal is not None and principal in self.sec.disabled:
            return Reply(Code.DISABLED, "the principal is disabled: no new session until it is enabled")
        return None

    def _set_enabled(self, op: c.SetPrincipalEnabled) -> Reply:
        problem = v.check_principal(op.principal, self.limits)
        if problem:
            return Reply(*problem)
        if op.enabled:
            return Reply(Code.OK, existed=self.sec.disabled.pop(op.principal, None) is not None)
        was = op.principal in self.sec.disabled
        if not self.sec.disable(op.principal, self.now_ms, self.limits.max_disabled_principals):
            return Reply(
                Code.QUOTA,
                f"{len(self.sec.disabled)} principals are disabled, "
                f"the limit is {self.limits.max_disabled_principals}",
            )
        # Disabling ends every session the principal has, in this same command (ASVS 5 7.4.2).
        ended: list[str] = []
        # By handle: the index's order differs between a replayed and a restored replica, and
        # the tombstones' order (evicted oldest first) and the events' must not.
        for s in self._principal_sessions(op.principal):
            live = s.expiry_reason(self.now_ms) is None
            if live:
                ended.append(s.handle)
                self._remove(s, Ended.DISABLED)
            else:
                self._expired(s)
        self.events["ended_disabled"] += len(ended)
        return Reply(Code.OK, handles=tuple(sorted(ended)), existed=was)

    def _reuse_detected(self, op: c.ReuseDetected) -> Reply:
        problem = v.check_token_hash(op.token_hash)
        if problem:
            return Reply(*problem)
        if not self.sec.is_reuse(op.token_hash, self.now_ms):
            return Reply(Code.OK)  # already reported (another read raced it), or swept
        return Reply(Code.OK, handles=self._reuse(op.token_hash), count=1)

    def _reuse(self, token_hash: bytes) -> tuple[str, ...]:
        """Record a reuse of rotated-away `token_hash`; with revoke_on_reuse, end its successor."""
        self.sec.mark_reported(token_hash)
        self.events["reuse_detected"] += 1
        successor = self.sec.live_successor(token_hash, self.sessions)
        tomb = self.sec.tombstones.get(token_hash)
        if self.lifecycle is not None and tomb is not None:
            principal = self.sessions[successor].principal if successor is not None else None
            self.lifecycle.append(self.now_ms, ev.Kind.REUSE_DETECTED, tomb.handle, principal, "")
        if self.limits.revoke_on_reuse != "on":
            return ()
        if successor is None:
            return ()
        s = self.sessions[successor]
        self._remove(s, Ended.REUSE)
        self.events["ended_reuse"] += 1
        return (s.handle,)

    def holds(self, token_hash: bytes) -> bool:
        """Whether the state knows this stored hash: a session's, or an ended one's tombstone
        (so a raw, pre-keying hash that was rotated away still finds its grace and reuse)."""
        return token_hash in self.sessions or token_hash in self.sec.tombstones

    def reused(self, token_hash: bytes, now_ms: int) -> bool:
        """Read-only, for a read that found nothing: is this an unreported reuse to propose?"""
        return self.sec.is_reuse(token_hash, max(now_ms, self.now_ms))

    # --------------------------------------------------------------- helpers
    def _check_session_bytes(self, attributes: Iterable[tuple[str, bytes]]) -> v.Problem | None:
        size = v.session_bytes(attributes)
        if size > self.limits.max_session_bytes:
            return (
                Code.QUOTA,
                f"session attributes total {size} bytes, the limit is {self.limits.max_session_bytes}",
            )
        return None

    def _live(self, token_hash: bytes, follow_grace: bool = False) -> Session | Reply:
        """The session if it exists and has not expired; expired ones are removed here.

        `follow_grace`: a rotated-away token within its grace serves its successor.
        """
        problem = v.check_token_hash(token_hash)
        if problem:
            return Reply(*problem)
        s = self._find(token_hash, follow_grace)
        if s is None:
            return Reply(Code.NOT_FOUND, "session not found")
        reason = s.expiry_reason(self.now_ms)
        if reason is not None:
            self._expired(s)
            return Reply(Code.NOT_FOUND, reason)
        return s

    def _find(self, token_hash: bytes, follow_grace: bool) -> Session | None:
        """The session of `token_hash`; a use of a rotated-away one past its grace is a reuse."""
        s = self.sessions.get(token_hash)
        if s is not None or not self.sec.active:
            return s
        if follow_grace:
            successor = self.sec.successor(token_hash, self.now_ms, self.sessions)
            if successor is not None:
                return self.sessions[successor]
        if self.sec.is_reuse(token_hash, self.now_ms):
            self._reuse(token_hash)
        return None

    def _drop_if_expired(self, token_hash: bytes) -> None:
        s = self.sessions.get(token_hash)
        if s is not None and s.expiry_reason(self.now_ms) is not None:
            self._expired(s)

    def _make_room(self, principal: str) -> tuple[str, ...] | Reply:
        """Apply the per-principal cap before adding one session to `principal`."""
        # Sorted only when there is something to remove: this runs on every create.
        now, sessions = self.now_ms, self.sessions
        index = self.by_principal.get(principal, ())
        gone = [sessions[k] for k in index if sessions[k].expiry_reason(now) is not None]
        for s in sorted(gone, key=lambda s: s.handle):
            self._expired(s)
        index = self.by_principal.get(principal, ())
        cap = self.limits.max_sessions_per_principal
        if len(index) < cap:
            return ()
        if self.limits.principal_cap_policy == "reject":
            return Reply(Code.QUOTA, f"principal already has {len(index)} sessions, the limit is {cap}")
        oldest = sorted((self.sessions[k] for k in index), key=lambda s: (s.created_ms, s.handle))
        victims = oldest[: len(index) - cap + 1]
        for s in victims:
            self._remove(s, Ended.EVICTED)
        return tuple(s.handle for s in victims)

    def _principal_sessions(self, principal: str) -> list[Session]:
        """The principal's sessions by handle: an order every replica agrees on."""
        return sorted(
            (self.sessions[k] for k in self.by_principal.get(principal, ())), key=lambda s: s.handle
        )

    def _store(self, s: Session) -> Session:
        """Replace a session's record (same token hash); a moved deadline gets a heap entry."""
        old = self.sessions[s.token_hash]
        self.sessions[s.token_hash] = s
        if s.deadline_ms != old.deadline_ms:
            heapq.heappush(self._expiry, (s.deadline_ms, s.token_hash))
        return s

    def _insert(self, s: Session) -> None:
        self.sessions[s.token_hash] = s
        self.by_handle[s.handle] = s.token_hash
        if s.principal is not None:
            self.by_principal[s.principal] = (*self.by_principal.get(s.principal, ()), s.token_hash)
        heapq.heappush(self._expiry, (s.deadline_ms, s.token_hash))

    def _remove(
        self, s: Session, why: Ended, successor: bytes | None = None, grace_ms: int = 0, serves: bool = False
    ) -> None:
        """Take `s` out of the state and its indexes. `why` is where lifecycle events hook;
        from level 5 the hash is tombstoned until the session's absolute deadline (rotated
        away: naming its `successor`, with a grace of `grace_ms`, serving it if `serves`)."""
        if self.sec.active:
            grace_until = self.now_ms + grace_ms
            tomb = Tombstone(s.absolute_deadline_ms, s.handle, why, successor, grace_until, serves)
            self.sec.bury(s.token_hash, tomb, self.limits.max_tombstones, self.now_ms)
        event = _EVENT_OF_END.get(why)
        if event is not None:  # (a rotation emits its own event once the new hash is stored)
            self._emit(event[0], s, event[1])
        del self.sessions[s.token_hash]
        del self.by_handle[s.handle]
        if s.principal is not None:
            index = tuple(k for k in self.by_principal[s.principal] if k != s.token_hash)
            if index:
                self.by_principal[s.principal] = index
            else:
                del self.by_principal[s.principal]

    def _sweep(self, limit: int) -> int:
        """Remove up to `limit` expired sessions, earliest (deadline, token hash) first.

        The heap may hold stale entries (a touch pushes a new one). An entry whose deadline
        is not the session's current one is re-pushed at the current deadline rather than
        acted on, so which sessions a bounded sweep removes depends only on the sessions'
        current deadlines, never on a replica's heap history (a restored replica rebuilds it).
        """
        removed = 0
        heap = self._expiry
        while heap and heap[0][0] <= self.now_ms and removed < limit:
            deadline, key = heapq.heappop(heap)
            s = self.sessions.get(key)
            if s is None:
                continue
            if s.deadline_ms != deadline:
                heapq.heappush(heap, (s.deadline_ms, key))
                continue
            absolute = self._expired(s)
            removed += 1
            # (Metrics count sweeps only, as before; the event stream also sees lazy removals.)
            self.events["expired_absolute" if absolute else "expired_idle"] += 1
        if len(heap) > 2 * len(self.sessions) + 1024:
            self._rebuild_expiry()
        self._dedup.expire(self.now_ms)
        self.sec.sweep(self.now_ms, limit)
        return removed

    def _rebuild_expiry(self) -> None:
        self._expiry = sorted((s.deadline_ms, s.token_hash) for s in self.sessions.values())

    # ----------------------------------------------------------------- reads
    def read(self, token_hash: bytes, now_ms: int) -> Reply:
        """A local read of one session (the caller decides whether it is linearizable)."""
        problem = v.check_token_hash(token_hash)
        if problem:
            return Reply(*problem)
        now = max(now_ms, self.now_ms)
        s = self.sessions.get(token_hash)
        if s is None and self.sec.active:
            successor = self.sec.successor(token_hash, now, self.sessions)
            s = self.sessions[successor] if successor is not None else None
        if s is None:
            return Reply(Code.NOT_FOUND, "session not found")
        reason = s.expiry_reason(now)
        if reason is not None:
            return Reply(Code.NOT_FOUND, reason)
        return Reply(Code.OK, session=s.view(True))

    def list_principal(self, principal: str, now_ms: int) -> list[SessionView]:
        now = max(now_ms, self.now_ms)
        live = [
            self.sessions[k]
            for k in self.by_principal.get(principal, ())
            if self.sessions[k].expiry_reason(now) is None
        ]
        return [s.view(False) for s in sorted(live, key=lambda s: (s.created_ms, s.handle))]

    def next_deadline_ms(self) -> int | None:
        """Earliest deadline in the expiry heap (may be stale, so only a hint to sweep)."""
        return self._expiry[0][0] if self._expiry else None

    # ------------------------------------------------------------- snapshots
    def capture(self) -> Capture:
        """A consistent copy of the replicated state, cheap enough to take under the lock.

        Sessions and exactly-once entries are immutable records, so two shallow dict copies
        (C-level, no Python call per item) are a frozen view; `Capture.serialize` does the
        O(sessions) work later, off the lock and off the tick thread.
        """
        return Capture(
            now_ms=self.now_ms,
            limits=self.limits,
            configured=self.configured,
            member_levels=dict(self.member_levels),
            sessions=dict(self.sessions),
            dedup=self._dedup.capture(),
            forgotten_ms=self._dedup.forgotten_ms,
            nodes=dict(self.nodes),
            events=None if self.lifecycle is None else self.lifecycle.capture(),
            secops=self.sec.capture(),
        )

    def snapshot(self) -> bytes:
        return self.capture().serialize()

    def restore(self, data: bytes) -> None:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
        if raw.get("format") not in READABLE_FORMATS:
            raise ValueError(f"unsupported snapshot format {raw.get('format')!r}")
        events, hits, evicted = self.events, self._dedup.hits, self.sec.tombstones_evicted
        packed = (self.packed_entries, self.packed_commands)
        self.__init__(limits_from_pairs(raw["limits"]), self.supported_level)  # type: ignore[misc]
        self.events, self._dedup.hits, self.sec.tombstones_evicted = events, hits, evicted
        self.packed_entries, self.packed_commands = packed
        self.configured = raw["configured"]
        self.member_levels = dict(raw["members"])
        self.nodes = {k: (r, g) for k, r, g in raw.get("nodes", ())}
        self.now_ms = raw["now_ms"]
        # Built directly (no heap push per session): restore time bounds a restart.
        sessions, by_handle, by_principal = self.sessions, self.by_handle, self.by_principal
        for h, handle, principal, attrs, created, last, idle, absolute, version in raw["sessions"]:
            sessions[h] = Session(h, handle, principal, attrs, created, last, idle, absolute, version)
            by_handle[handle] = h
            if principal is not None:
                by_principal[principal] = (*by_principal.get(principal, ()), h)
        # (A principal's index order is never observable: every use sorts or counts.)
        self._rebuild_expiry()
        self._dedup.load_wire(raw["dedup"], raw["forgotten_ms"])
        if "events" in raw:  # format 3; a format-2 snapshot predates EnableEvents
            self.lifecycle = ev.EventRing.from_wire(raw["events"])
        self.sec.load(raw.get("secops"))

    def digest(self) -> str:
        return self.capture().digest()

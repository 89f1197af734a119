"""The gRPC service: request checks, leader routing, and the store-error -> status boundary.

Request path: a handler checks the request's shape (validation.py, the same checks apply
runs), insists on being the leader (a follower answers FAILED_PRECONDITION with the
leader's gRPC address in the `sq-leader` trailer), stamps time and fresh values into one
command, proposes it and awaits its apply (no thread blocks), then turns the Reply into a
response or a typed StoreError. `_boundary` is the one place a StoreError becomes a gRPC
status; anything else becomes INTERNAL with no detail (the node logs the traceback).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import grpc

from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

from . import _admin, _member_change, atrest, authz, batch, members
from . import commands as c
from . import errors as e
from . import validation as v
from ._reuse_report import ReuseReporter
from .backup_stream import SnapshotSaves
from .clock import ProposerClock
from .config import Limits, NodeConfig, limits_from_pairs, limits_to_pairs, limits_to_wire
from .decoding import Undecodable
from .errors import ConfigError
from .event_stream import EventFeed, EventStreams
from .metrics import NodeMetrics
from .raft import ReplicatedLog
from .replies import Code, Reply, SessionView
from .sealing import Sealing
from .state import SessionMachine

log = logging.getLogger(__name__)

_Resp = TypeVar("_Resp")

NODE_METADATA_KEY = "sq-node"
CLIENT_ID_MAX_BYTES = 64
# Plans of an increment that converts a sealed value (store/sealing.py): a later plan
# usually finds the plaintext counter another request left, so a few suffice; the last
# RETRY reaches the client as UNAVAILABLE (nothing applied), which it retries.
REBASE_ATTEMPTS = 4
REPLANNED = "counter conversion planned again"

_REPLY_ERRORS: dict[Code, type[e.StoreError]] = {
    Code.INVALID: e.InvalidArgument,
    Code.NOT_FOUND: e.NotFound,
    Code.ALREADY_EXISTS: e.AlreadyExists,
    Code.VERSION_CONFLICT: e.VersionConflict,
    Code.QUOTA: e.QuotaExceeded,
    Code.STALE_SEQUENCE: e.StaleSequence,
    Code.DISABLED: e.PrincipalDisabled,
}


def _check(problem: v.Problem | None) -> None:
    if problem is not None:
        raise _REPLY_ERRORS[problem[0]](problem[1])


def _ok(reply: Reply) -> Reply:
    if reply.code is Code.OK:
        return reply
    if reply.code is Code.DEDUP_EXPIRED:
        raise e.DedupExpired(reply.message, reply.count)
    if reply.code is Code.VERSION_CONFLICT:
        raise e.VersionConflictAt(reply.message, reply.count)
    if reply.code is Code.RETRY:  # nothing applied, nothing remembered: the client retries
        raise e.NotReady(reply.message)
    raise _REPLY_ERRORS[reply.code](reply.message)


def cluster_level(machine: SessionMachine, config: NodeConfig, member_ids: Sequence[str]) -> int:
    """The lowest command level the members advertised: what the leader may propose
    (`members.levels_counted` says which members count while one joins)."""
    counted = members.levels_counted(config, member_ids, machine.member_levels, machine.nodes)
    return machine.lowest_level(counted)


def accepting_writes(machine: SessionMachine, config: NodeConfig) -> bool:
    """Whether mutations may be applied: only under the limits the cluster agreed on.

    A new cluster applies nothing before its first leader seeded the limits from its file
    (duties.seed_limits), so no session is ever admitted under rules the operator did not
    set. A member that advertised a level without Configure is an older release, which
    kept its limits in its file: then the code's defaults stand, as they did there.
    """
    if machine.configured:
        return True
    levels = (machine.member_levels.get(n.id) for n in config.cluster.nodes)
    return any(level is not None and level < c.LEVELS[c.Configure] for level in levels)


def limits_json(limits: Limits) -> str:
    return json.dumps(dict(limits_to_pairs(limits)), sort_keys=True)


def _session(view: SessionView | None, attributes: c.Attributes | None = None) -> pb.Session:
    """The reply's session; `attributes` replaces the view's (opened values, sealing.py)."""
    if view is None:
        return pb.Session()
    return pb.Session(
        handle=view.handle,
        principal=view.principal or "",
        attributes=[
            pb.Attribute(name=n.encode("utf-8"), value=val)
            for n, val in (view.attributes if attributes is None else attributes)
        ],
        created_ms=view.created_ms,
        last_access_ms=view.last_access_ms,
        idle_timeout_ms=view.idle_timeout_ms,
        absolute_deadline_ms=view.absolute_deadline_ms,
        version=view.version,
    )


def _name(raw: bytes, where: str, index: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise e.InvalidArgument(f"{where}[{index}] name is not valid UTF-8") from None


def _attributes(items: Any, where: str) -> c.Attributes:
    return tuple((_name(a.name, where, i), a.value) for i, a in enumerate(items))


class SessionService(pb_grpc.SessionStoreServicer):
    def __init__(
        self,
        config: NodeConfig,
        raft: ReplicatedLog,
        clock: ProposerClock,
        metrics: NodeMetrics | None = None,
        sealing: Sealing | None = None,
        feed: EventFeed | None = None,
    ) -> None:
        self._config = config
        # Encryption at rest and keyed token hashes (store/sealing.py); off without a key file.
        self._sealing = sealing or Sealing(None)
        self._metrics = metrics or NodeMetrics(config.node.id)
        self._server = config.cluster.server
        self._raft = raft
        self._clock = clock
        # Set by the node once it applied what was committed when it started (node.py).
        self.ready = False
        self._reuse = ReuseReporter(raft, config.cluster.server.apply_timeout_s)
        ca = config.cluster.tls_ca
        # Which cluster a backup comes from: its CA (a restored cluster gets a new one).
        ca_sha = hashlib.sha256(ca.read_bytes()).hexdigest() if ca is not None else ""
        self.saves = SnapshotSaves(raft, config.node.id, ca_sha)
        self.event_feed = feed or EventFeed(raft.read(lambda m: m))
        self._member_ids = members.MemberIds(config)
        # The last replicated limits seen and the client-facing ones derived from them.
        self._limits_net: tuple[Limits, Limits] | None = None
        self._events = EventStreams(raft, self.event_feed, self._server.max_event_streams)

    @property
    def _limits(self) -> Limits:
        """The replicated limits (a Configure command set them), never this node's file."""
        return self._raft.read(lambda m: m.limits)

    def _value_limits(self, limits: Limits) -> Limits:
        """The limits a client's plaintext values meet: net of what sealing adds to each."""
        if not self._sealing.enabled:
            return limits
        # Derived once per replicated limits (a Configure changes them): dataclasses.replace
        # of every Limits field measured a tenth of a write's service time.
        cached = self._limits_net
        if cached is None or cached[0] is not limits:
            net = replace(
                limits,
                max_attribute_value_bytes=max(1, limits.max_attribute_value_bytes - atrest.OVERHEAD_BYTES),
            )
            cached = self._limits_net = (limits, net)
        return cached[1]

    def _now(self) -> int:
        return self._clock.stamp(self._raft.term())

    # ------------------------------------------------------------ boundary
    async def _boundary(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], work: Awaitable[_Resp]
    ) -> _Resp:
        metadata: list[tuple[str, str]] = [(NODE_METADATA_KEY, self._config.node.id)]
        started = time.perf_counter()
        code = "CANCELLED"  # unless set below: the caller went away, or the node is stopping
        try:
            response = await work
            code = "OK"
            return response
        except e.StoreError as exc:
            code = exc.status.name
            if isinstance(exc, e.NotLeader) and exc.leader_address:
                metadata.append((e.LEADER_METADATA_KEY, exc.leader_address))
            elif isinstance(exc, e.DedupExpired):
                metadata.append((e.EPOCH_METADATA_KEY, str(exc.epoch_ms)))
            elif isinstance(exc, e.VersionConflictAt):
                metadata.append((e.VERSION_METADATA_KEY, str(exc.current_version)))
            elif isinstance(exc, e.UpgradePending):
                metadata.append((e.UPGRADE_METADATA_KEY, "pending"))
            elif isinstance(exc, e.EventsCompacted):
                metadata.append((e.OLDEST_CURSOR_METADATA_KEY, str(exc.oldest_cursor)))
            if isinstance(exc, e.PermissionDenied):
                # The scope check (_check_scope); the role check refused in authz.py already.
                self._metrics.permission_denied(method, "scope")
                log.info(
                    "refused a request: PERMISSION_DENIED: %s (certificate %r): %s",
                    method,
                    authz.caller_name(context),
                    exc.message,
                )
            elif isinstance(exc, e.InvalidArgument | e.QuotaExceeded | e.UpgradePending):
                # Bad input: one line, no traceback, nothing proposed.
                log.info("refused a request: %s: %s", exc.status.name, exc.message)
            elif isinstance(exc, e.Undecryptable):
                # The node's key file lacks a key, or stored data changed: the operator must know.
                log.warning("a stored value did not open: %s", exc.message)
            context.set_trailing_metadata(tuple(metadata))
            await context.abort(exc.status, exc.message)
        except Exception:
            code = "INTERNAL"
            log.exception("internal error serving a request")
            context.set_trailing_metadata(tuple(metadata))
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the node's log")
        finally:
            # Batch items pass here too (batch.ItemContext), each under its own method.
            self._metrics.observe_request(method, code, time.perf_counter() - started)
        raise AssertionError("unreachable: abort raises")

    async def refuse_undecodable(
        self, request: Undecodable, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """A request that did not decode (decoding.py): INVALID_ARGUMENT, one log line."""

        async def work() -> None:
            raise e.InvalidArgument(request.message)

        # Counted under its method: input types are named <Method>Request.
        await self._boundary(request.message_name.removesuffix("Request"), context, work())

    def _require_leader(self) -> None:
        if self._raft.is_leader():
            return
        leader = self._raft.leader_raft_address()
        if leader is None:
            raise e.NoLeader("no leader is known (election in progress or no quorum); nothing was applied")
        address = self._raft.grpc_address_of(leader)
        raise e.NotLeader(f"this node is not the leader; the leader is {address or 'unknown'}", address)

    def _request_id(self, rid: pb.RequestId, present: bool) -> tuple[bytes, int, int]:
        if not present:
            raise e.InvalidArgument("request_id is required on every mutating call (exactly-once retries)")
        if not 1 <= len(rid.client_id) <= CLIENT_ID_MAX_BYTES:
            raise e.InvalidArgument(f"request_id.client_id must be 1 to {CLIENT_ID_MAX_BYTES} bytes")
        if rid.sequence < 1:
            raise e.InvalidArgument("request_id.sequence must be >= 1")
        return rid.client_id, rid.sequence, rid.client_epoch_ms

    async def _mutate(self, request: Any, op: c.Op) -> Reply:
        """Leader check, stamp, propose, await apply, and the Reply -> error translation.

        An increment that converts a sealed value to a counter (store/sealing.py) is guarded
        by the version it read; when a concurrent change wins, apply answers RETRY (nothing
        applied or remembered) and this plans again from the newer state, a bounded number
        of times, under the same request id: the caller sees one request and one effect.
        """
        cid, seq, epoch = self._request_id(request.request_id, request.HasField("request_id"))
        for _ in range(REBASE_ATTEMPTS - 1):
            proposed, reply = await self._propose(op, cid, seq, epoch)
            if not (reply.code is Code.RETRY and isinstance(proposed, c.Update) and proposed.rebase):
                return _ok(reply)
            # Once per lost race, only while a sealed value is being converted: rare by design.
            log.info("%s: converting a sealed value to a counter lost a race; planning it again", REPLANNED)
        return _ok((await self._propose(op, cid, seq, epoch))[1])

    async def _propose(self, op: c.Op, cid: bytes, seq: int, epoch: int) -> tuple[c.Op, Reply]:
        """One attempt: plan on this node's state, prepare, propose; (what was proposed, its reply)."""
        self._require_leader()
        sealing = self._sealing
        addresses = self._raft.member_addresses
        options = sealing.candidates_of(op)  # an HMAC: not under the state lock

        def look(m: SessionMachine) -> tuple[int, bool, Any, Reply | None]:
            # The members by id, from the state this lock holds (memoized: members.MemberIds).
            level = cluster_level(m, self._config, self._member_ids.of(m.nodes, addresses))
            plan = sealing.plan(m, op, level, options)
            return level, accepting_writes(m, self._config), plan, None if plan else m.precheck(op)

        level, open_, plan, refusal = self._raft.read(look)
        if not open_ and not isinstance(op, c.Configure):
            raise e.NotReady("the cluster's limits are being set (a new cluster); nothing was applied, retry")
        if plan is not None:
            # Keyed hashes and sealed values (AES-GCM runs here, off the state lock).
            op = sealing.prepare(op, plan, level)
            sealed_op = op
            refusal = self._raft.read(lambda m: m.precheck(sealed_op))
            if refusal is not None and refusal.code is Code.QUOTA:
                refusal = replace(refusal, message=refusal.message + sealing.limit_note())
        if refusal is not None:
            _ok(refusal)  # a size the log must not carry: refused before it enters the journal
        needed = c.level_of(c.Command(op, now_ms=0))
        if needed > level:
            raise e.UpgradePending(
                f"{type(op).__name__} needs command level {needed}; "
                f"a member of this cluster supports only {level} (finish the upgrade first)"
            )
        # Before every member understands the client epoch, retries are deduplicated only
        # while remembered (the level-1 rule); from then on, honestly.
        client_epoch = epoch if level >= c.CLIENT_EPOCH_LEVEL else None
        now = self._now()
        entry = c.encode(c.Command(op, now_ms=now, client_id=cid, sequence=seq, client_epoch_ms=client_epoch))
        return op, await self._raft.propose(entry, self._server.apply_timeout_s)

    # ----------------------------------------------------------- mutations
    async def Create(self, request: pb.CreateRequest, context: Any) -> pb.CreateResponse:
        async def work() -> pb.CreateResponse:
            attrs = _attributes(request.attributes, "attributes")
            principal = request.principal or None
            limits = self._value_limits(self._limits)  # one read of the replicated limits (state lock)
            _check(v.check_request_token_hash(request.token_hash))
            if principal is not None:
                _check(v.check_principal(principal, limits))
            _check(v.check_request_timeouts(request.idle_timeout_ms, request.absolute_timeout_ms, limits))
            _check(v.check_attributes(attrs, limits, "attributes"))
            # The handle is a fresh value: drawn here, by the proposer, never inside apply.
            op = c.Create(
                token_hash=request.token_hash,
                handle=secrets.token_urlsafe(12),
                principal=principal,
                attributes=attrs,
                idle_timeout_ms=request.idle_timeout_ms,
                absolute_timeout_ms=request.absolute_timeout_ms,
            )
            reply = await self._mutate(request, op)
            return pb.CreateResponse(session=_session(reply.session), evicted_handles=list(reply.handles))

        return await self._boundary("Create", context, work())

    async def Update(self, request: pb.UpdateRequest, context: Any) -> pb.UpdateResponse:
        async def work() -> pb.UpdateResponse:
            sets = _attributes(request.set, "set")
            deletes = tuple(_name(raw, "delete", i) for i, raw in enumerate(request.delete))
            increments = tuple(
                (_name(x.name, "increment", i), x.delta) for i, x in enumerate(request.increment)
            )
            _check(v.check_request_token_hash(request.token_hash))
            limits = self._value_limits(self._limits)  # one read of the replicated limits (state lock)
            _check(v.check_attributes(sets, limits, "set"))
            _check(v.check_update_names(sets, deletes, increments, limits))
            expected = request.expected_version if request.HasField("expected_version") else None
            idle = request.idle_timeout_ms if request.HasField("idle_timeout_ms") else None
            if idle is not None:
                _check(v.check_idle_timeout(idle, limits))
                _check(v.check_request_idle_timeout(idle))
            op = c.Update(request.token_hash, sets, deletes, expected, increments, idle)
            reply = await self._mutate(request, op)
            return pb.UpdateResponse(session=_session(reply.session))

        return await self._boundary("Update", context, work())

    async def Touch(self, request: pb.TouchRequest, context: Any) -> pb.TouchResponse:
        async def work() -> pb.TouchResponse:
            _check(v.check_request_token_hash(request.token_hash))
            reply = await self._mutate(request, c.Touch(request.token_hash))
            return pb.TouchResponse(session=_session(reply.session))

        return await self._boundary("Touch", context, work())

    async def Rotate(self, request: pb.RotateRequest, context: Any) -> pb.RotateResponse:
        async def work() -> pb.RotateResponse:
            _check(v.check_request_token_hash(request.token_hash))
            _check(v.check_request_token_hash(request.new_token_hash, "new_token_hash"))
            if request.token_hash == request.new_token_hash:
                raise e.InvalidArgument("new_token_hash must differ from token_hash")
            principal = request.principal if request.HasField("principal") else None
            if principal is not None:
                _check(v.check_principal(principal, self._limits))
            if request.grace and principal is not None:
                raise e.InvalidArgument(
                    "grace is for a routine rotation; a rotation that binds a principal (login) "
                    "ends the old token at once"
                )
            op = c.Rotate(request.token_hash, request.new_token_hash, principal, request.grace)
            reply = await self._mutate(request, op)
            return pb.RotateResponse(session=_session(reply.session), evicted_handles=list(reply.handles))

        return await self._boundary("Rotate", context, work())

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteResponse:
        async def work() -> pb.DeleteResponse:
            target = request.WhichOneof("target")
            if target is None:
                raise e.InvalidArgument("delete needs token_hash or handle")
            if target == "token_hash":
                _check(v.check_request_token_hash(request.token_hash))
                op = c.Delete(token_hash=request.token_hash, handle=None)
            else:
                _check(v.check_handle(request.handle, self._limits))
                op = c.Delete(token_hash=None, handle=request.handle)
            reply = await self._mutate(request, op)
            return pb.DeleteResponse(existed=reply.existed)

        return await self._boundary("Delete", context, work())

    async def RevokePrincipal(
        self, request: pb.RevokePrincipalRequest, context: Any
    ) -> pb.RevokePrincipalResponse:
        async def work() -> pb.RevokePrincipalResponse:
            _check(v.check_principal(request.principal, self._limits))
            if request.session_token_hash:
                self._check_scope(request.principal, request.session_token_hash, await self._linearizable())
            op = c.RevokePrincipal(request.principal, request.except_handle or None)
            reply = await self._mutate(request, op)
            return pb.RevokePrincipalResponse(revoked_handles=list(reply.handles))

        return await self._boundary("RevokePrincipal", context, work())

    async def SetPrincipalEnabled(
        self, request: pb.SetPrincipalEnabledRequest, context: Any
    ) -> pb.SetPrincipalEnabledResponse:
        async def work() -> pb.SetPrincipalEnabledResponse:
            _check(v.check_principal(request.principal, self._limits))
            reply = await self._mutate(request, c.SetPrincipalEnabled(request.principal, request.enabled))
            return pb.SetPrincipalEnabledResponse(
                ended_handles=list(reply.handles), was_disabled=reply.existed
            )

        return await self._boundary("SetPrincipalEnabled", context, work())

    def _check_scope(self, principal: str, session_token_hash: bytes, now: int) -> None:
        """A session_token_hash, when given, must name a live session of `principal`.

        It is how an app-role certificate acts for one principal (store/authz.py requires
        it of app callers; an admin may give one too and is held to it). Checked after a
        confirmed read index: a session deleted a moment ago no longer vouches.
        """
        if not session_token_hash:
            return
        _check(v.check_request_token_hash(session_token_hash, "session_token_hash"))
        options = self._sealing.candidates(session_token_hash)
        _, reply = self._raft.read(lambda m: self._sealing.read(m, session_token_hash, now, options))
        owner = reply.session.principal if reply.code is Code.OK and reply.session is not None else None
        if owner != principal:
            raise e.PermissionDenied(
                "permission denied: session_token_hash names no live session of this principal"
            )

    # --------------------------------------------------------------- reads
    async def _linearizable(self) -> int:
        """Wait for a confirmed read index (any node: ReadIndex, no log entry); returns `now`."""
        if self._server.unsafe_skip_read_barrier:
            # The canary of tests/integration/test_stale_read.py: the leader answers from its
            # local state without confirming it still leads, so stale reads are possible.
            self._require_leader()
            return self._now()
        await self._raft.read_index()
        return self._now()

    async def Validate(self, request: pb.ValidateRequest, context: Any) -> pb.ValidateResponse:
        async def work() -> pb.ValidateResponse:
            _check(v.check_request_token_hash(request.token_hash))
            if request.consistency == pb.STALE and not request.touch:
                if not self.ready:
                    raise e.NotReady("this node is still catching up after its start; ask another node")
                now = self._now()
            else:
                now = await self._linearizable()

            # The stored form of the hash: keyed, or raw for a session from before keying.
            # The keyed form is an HMAC: computed here, not under the state lock.
            options = self._sealing.candidates(request.token_hash)

            def look(m: SessionMachine) -> tuple[bytes, Reply, bool]:
                stored, found = self._sealing.read(m, request.token_hash, now, options)
                return stored, found, m.reused(stored, now)

            h, found, reused = self._raft.read(look)
            if reused:
                # A rotated-away token after its grace: NOT_FOUND like any unknown token, and
                # the reuse is recorded through the log (secops.py, _reuse_report.py).
                await self._reuse.report(h, self._now())
            reply = _ok(found)
            view = reply.session
            assert view is not None
            # Touch coalescing: write only when last access is older than the interval.
            if request.touch and now - view.last_access_ms >= self._server.touch_interval_ms:
                entry = c.encode(c.Command(c.Touch(h, with_attributes=True), now_ms=now))
                timeout_s = self._server.apply_timeout_s
                try:
                    if self._raft.is_leader():
                        reply = _ok(await self._raft.propose(entry, timeout_s))
                    else:  # a follower read: pysyncobj forwards the touch to the leader
                        reply = _ok(await self._raft.propose_anywhere(entry, timeout_s))
                except (e.OutcomeUnknown, e.NoLeader):
                    log.info("touch during validate not confirmed; answering from the barrier read")
            elif request.touch:
                self._metrics.touch_coalesced()
            view = reply.session
            if view is None:
                return pb.ValidateResponse(session=_session(None))
            return pb.ValidateResponse(session=_session(view, self._sealing.open_attributes(view)))

        return await self._boundary("Validate", context, work())

    async def ListSessions(self, request: pb.ListSessionsRequest, context: Any) -> pb.ListSessionsResponse:
        async def work() -> pb.ListSessionsResponse:
            _check(v.check_principal(request.principal, self._limits))
            now = await self._linearizable()
            self._check_scope(request.principal, request.session_token_hash, now)
            views = self._raft.read(lambda m: m.list_principal(request.principal, now))
            return pb.ListSessionsResponse(sessions=[_session(s) for s in views])

        return await self._boundary("ListSessions", context, work())

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        async def work() -> pb.StatusResponse:
            st = self._raft.status()
            leader = st.leader_raft_address
            ids = self._raft.member_ids()

            def look(m: SessionMachine) -> tuple[Any, ...]:
                # capture() is a shallow copy; the O(sessions) digest runs off the lock below.
                cap = m.capture() if request.digest else None
                level, open_ = cluster_level(m, self._config, ids), accepting_writes(m, self._config)
                ring = m.lifecycle
                events = (0, 0) if ring is None else (ring.last_cursor, ring.oldest if len(ring) else 0)
                sec = (m.sec.active, len(m.sec.tombstones), len(m.sec.disabled))
                packed = (m.packed_entries, m.packed_commands)
                return (
                    len(m.sessions),
                    cap,
                    m.limits,
                    level,
                    open_,
                    m.now_ms,
                    ring is not None,
                    events,
                    sec,
                    packed,
                )

            count, cap, limits, level, open_, now_ms, events_on, (last, oldest), sec, packed = (
                self._raft.read(look)
            )
            digest = await asyncio.to_thread(cap.digest) if cap is not None else ""
            return pb.StatusResponse(
                node_id=self._config.node.id,
                is_leader=st.is_leader,
                leader_address=self._raft.grpc_address_of(leader) or "",
                term=st.term,
                commit_index=st.commit_index,
                last_applied=st.last_applied,
                session_count=count,
                state_digest=digest,
                replicated_now_ms=now_ms,
                clock_ahead_ms=self._clock.ahead_ms,
                ready=self.ready,
                limits_json=limits_json(limits),
                limits_from_file_differ=limits != self._config.cluster.limits,
                command_level=self._config.command_level,
                cluster_command_level=level,
                journal_bytes=st.journal_bytes,
                journal_entries=st.journal_entries,
                snapshot_index=st.snapshot_index,
                snapshot_bytes=st.snapshot_bytes,
                snapshots_taken=st.snapshots_taken,
                accepting_writes=open_,
                member_grpc_addresses=self._member_grpc_addresses(),
                events_enabled=events_on,
                events_last_cursor=last,
                events_oldest_cursor=oldest,
                security_ops=sec[0],
                tombstones=sec[1],
                disabled_principals=sec[2],
                packed_entries_applied=packed[0],
                packed_commands_applied=packed[1],
                packed_entries_proposed=st.packed_proposed,
            )

        return await self._boundary("Status", context, work())

    async def Configure(self, request: pb.ConfigureRequest, context: Any) -> pb.ConfigureResponse:
        async def work() -> pb.ConfigureResponse:
            try:
                changes = json.loads(request.limits_json or "{}")
            except json.JSONDecodeError as exc:
                raise e.InvalidArgument(f"limits_json is not JSON: {exc}") from None
            if not isinstance(changes, dict) or not changes:
                raise e.InvalidArgument("limits_json must be a non-empty JSON object of limit -> value")
            current = dict(limits_to_pairs(self._limits))
            unknown = sorted(set(changes) - set(current))
            if unknown:
                raise e.InvalidArgument(f"unknown limit(s): {', '.join(unknown)}")
            try:
                limits = limits_from_pairs({**current, **changes})
            except ConfigError as exc:
                raise e.InvalidArgument(str(exc)) from None
            await self._mutate(request, c.Configure(limits_to_wire(limits)))
            return pb.ConfigureResponse(limits_json=limits_json(self._limits))

        return await self._boundary("Configure", context, work())

    async def LeaderTransfer(
        self, request: pb.LeaderTransferRequest, context: Any
    ) -> pb.LeaderTransferResponse:
        return await self._boundary(
            "LeaderTransfer", context, _admin.leader_transfer(self._raft, self._config, request)
        )

    async def MemberList(self, request: pb.MemberListRequest, context: Any) -> pb.MemberListResponse:
        return await self._boundary(
            "MemberList", context, _admin.member_list(self._raft, self._config, request)
        )

    def _member_grpc_addresses(self) -> list[str]:
        names = self._raft.names()
        return sorted(names[a].grpc_address for a in self._raft.member_addresses if a in names)

    async def _propose_admin(self, op: c.Op, timeout_s: float) -> Reply:
        """An admin command without a request id (MemberIdentity: applying it twice is harmless)."""
        entry = c.encode(c.Command(op, now_ms=self._now()))
        return _ok(await self._raft.propose(entry, timeout_s))

    async def MemberAdd(self, request: pb.MemberAddRequest, context: Any) -> pb.MemberAddResponse:
        ids = self._raft.member_ids()
        level = self._raft.read(lambda m: cluster_level(m, self._config, ids))
        work = _member_change.member_add(self._raft, self._config, request, self._propose_admin, level)
        return await self._boundary("MemberAdd", context, work)

    async def MemberRemove(self, request: pb.MemberRemoveRequest, context: Any) -> pb.MemberRemoveResponse:
        ids = self._raft.member_ids()
        level = self._raft.read(lambda m: cluster_level(m, self._config, ids))
        work = _member_change.member_remove(self._raft, self._config, request, self._propose_admin, level)
        return await self._boundary("MemberRemove", context, work)

    async def Batch(self, request: pb.BatchRequest, context: Any) -> pb.BatchResponse:
        handlers: dict[str, batch.Handler] = {
            "validate": self.Validate,
            "create": self.Create,
            "update": self.Update,
            "touch": self.Touch,
            "rotate": self.Rotate,
            "delete": self.Delete,
        }
        return await self._boundary("Batch", context, batch.serve(handlers, request))

    async def SnapshotSave(
        self, request: pb.SnapshotSaveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.SnapshotChunk]:
        """A backup at one log index (store/backup_stream.py); admin only."""

        async def prepare() -> Any:
            self._require_leader()
            return await self.saves.begin()

        save = await self._boundary("SnapshotSave", context, prepare())
        try:
            async for chunk in save.chunks():
                yield chunk
        except TimeoutError:
            log.warning("snapshot save at index %d took too long; ended", save.index)
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the snapshot save took too long; retry")
        finally:
            self.saves.release()  # also when the stream never started (the caller went away)

    # grpc.aio serves a coroutine handler of a streaming method that writes with
    # context.write; the generated stub types only the generator form.
    async def Events(self, request: pb.EventsRequest, context: Any) -> None:  # type: ignore[override]
        """Server-streaming (store/event_stream.py): written with context.write, ends OK on stop."""
        await self._boundary("Events", context, self._events.serve(request, context))

"""SessionClient: the public face; builds requests, leaves routing and retries to _retry.

Each method is a few lines on purpose: it turns arguments into one request message,
takes a request id from the lane pool if the call mutates, and hands the message to the
retry loop. Everything that decides *how* a call reaches the leader lives elsewhere, so
every method gets identical retry and error semantics.

Tokens are made here (create, rotate) and hashed here; the node, the log and the logs of
this library only ever see hashes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from sessionquorum.proto import sessionquorum_pb2 as pb

from ._channels import DEFAULT_MAX_MESSAGE_BYTES, ChannelPool, TLSConfig
from ._errors import OutcomeUnknown
from ._lanes import LanePool, Mutation
from ._retry import Caller
from ._routing import Router
from ._session import (
    Created,
    Rotated,
    Session,
    attributes_to_pb,
    encode_name,
    names_to_pb,
    seconds_to_ms,
    session_from_pb,
)
from ._tokens import hash_prefix, hash_token, new_token

if TYPE_CHECKING:
    from ._retry import RpcPicker


_Req = TypeVar("_Req", bound=Mutation)
_Resp = TypeVar("_Resp")

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
# Where linearizable reads go. Every node answers them correctly (ReadIndex: a follower asks
# the leader for a read index and waits until it applied it); "any" spreads them over the
# nodes, which scales reads, "leader" saves the follower's extra round trip.
READ_FROM_LEADER = "leader"
READ_FROM_ANY = "any"
# Well below the node's apply timeout (5 s) on purpose: a leader that cannot commit is
# usually gone or paused, and the retry carries the same request id, so giving up on an
# attempt early is free. Measured by the pause-leader chaos scenario: a stopped leader held
# every worker for the whole attempt timeout (3 s before); healthy p99 is ~150 ms at 64 threads.
DEFAULT_ATTEMPT_TIMEOUT_S = 1.0
# OWASP: 15-30 min idle for low-risk applications, 4-8 h absolute lifetime.
DEFAULT_IDLE_TIMEOUT_S = 30 * 60.0
DEFAULT_ABSOLUTE_TIMEOUT_S = 8 * 3600.0


# Calls that may travel in a Batch with concurrent calls of this process (_coalesce.py).
_BATCH_KINDS: dict[type, str] = {
    pb.CreateRequest: "create",
    pb.UpdateRequest: "update",
    pb.TouchRequest: "touch",
    pb.RotateRequest: "rotate",
    pb.DeleteRequest: "delete",
}


def _positive_seconds(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


class SessionClient:
    """A thread-safe client for a sessionquorum cluster; share one per process.

    Plaintext must be asked for (`insecure=True`): the token hashes this client sends are
    credentials against the store, so the default is to refuse to run without TLS.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        tls: TLSConfig | None = None,
        insecure: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        attempt_timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        read_from: str = READ_FROM_LEADER,
        coalesce: bool = True,
    ) -> None:
        if read_from not in (READ_FROM_LEADER, READ_FROM_ANY):
            raise ValueError(f"read_from must be {READ_FROM_LEADER!r} or {READ_FROM_ANY!r}: {read_from!r}")
        if tls is None and not insecure:
            raise ValueError("pass tls=TLSConfig(...), or insecure=True to use plaintext deliberately")
        if tls is not None and insecure:
            raise ValueError("tls and insecure=True contradict each other; pass one")
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        self._timeout_s = _positive_seconds("timeout_s", timeout_s)
        self._reads_anywhere = read_from == READ_FROM_ANY
        self._router = Router(endpoints)
        self._channels = ChannelPool(tls, max_message_bytes)
        self._lanes = LanePool()
        self._caller = Caller(
            self._router,
            self._channels,
            attempt_timeout_s=_positive_seconds("attempt_timeout_s", attempt_timeout_s),
            coalesce=coalesce,
        )

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The known endpoints: those given, plus any learned from leader hints."""
        return self._router.endpoints

    def close(self) -> None:
        """Close all channels; idempotent. Calls still running end with an error."""
        self._caller.close()
        self._channels.close()

    def __enter__(self) -> SessionClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _deadline(self, timeout_s: float | None) -> float:
        return self._timeout_s if timeout_s is None else _positive_seconds("timeout_s", timeout_s)

    # -- mutations: each carries a request id leased for the whole call --------------------

    def _mutate(
        self, label: str, pick: RpcPicker[_Req, _Resp], request: _Req, timeout_s: float | None
    ) -> _Resp:
        """Send one mutation; every retry of it carries the same leased (client id, sequence)."""
        with self._lanes.lease(request) as lease:
            return self._caller.call(
                label,
                pick,
                lease.request,
                mutation=True,
                leader_only=True,
                timeout_s=self._deadline(timeout_s),
                lease=lease,
                batch_kind=_BATCH_KINDS.get(type(request)),
            )

    def _mutate_to_token(
        self, label: str, pick: RpcPicker[_Req, _Resp], request: _Req, timeout_s: float | None, token: str
    ) -> _Resp:
        """A mutation that installs `token`; if its outcome is unknown, the error carries it.

        Without it a create or rotate that did apply would leave a session nobody can
        reach: the token exists only in this process (see OutcomeUnknown.token).
        """
        try:
            return self._mutate(label, pick, request, timeout_s)
        except OutcomeUnknown as exc:
            exc.token = token
            raise

    def create(
        self,
        *,
        principal: str | None = None,
        attributes: Mapping[str, bytes] | None = None,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        absolute_timeout_s: float = DEFAULT_ABSOLUTE_TIMEOUT_S,
        timeout_s: float | None = None,
    ) -> Created:
        """Start a session under a fresh token; `principal=None` makes it anonymous.

        On OutcomeUnknown, `exc.token` is the token; `validate(exc.token)` tells whether
        the session was created.
        """
        token = new_token()
        token_hash = hash_token(token)
        request = pb.CreateRequest(
            token_hash=token_hash,
            principal=principal or "",
            attributes=attributes_to_pb(attributes),
            idle_timeout_ms=seconds_to_ms("idle_timeout_s", idle_timeout_s),
            absolute_timeout_ms=seconds_to_ms("absolute_timeout_s", absolute_timeout_s),
        )
        response = self._mutate_to_token(
            f"create {hash_prefix(token_hash)}", lambda stub: stub.Create, request, timeout_s, token
        )
        return Created(token, session_from_pb(response.session), tuple(response.evicted_handles))

    def update(
        self,
        token: str,
        *,
        set: Mapping[str, bytes] | None = None,
        delete: Iterable[str] | None = None,
        increment: Mapping[str, int] | None = None,
        expected_version: int | None = None,
        timeout_s: float | None = None,
    ) -> Session:
        """Delete, set and increment attributes in one step; with `expected_version`, compare-and-set.

        `increment` adds to counters held as decimal integers (a missing one counts as 0)
        on the node, so concurrent increments never lose one another. The returned
        Session's attributes are the incremented counters' new values.
        """
        token_hash = hash_token(token)
        request = pb.UpdateRequest(
            token_hash=token_hash,
            set=attributes_to_pb(set),
            delete=names_to_pb(delete),
            increment=[pb.Increment(name=encode_name(n), delta=d) for n, d in (increment or {}).items()],
        )
        if expected_version is not None:
            request.expected_version = expected_version
        response = self._mutate(
            f"update {hash_prefix(token_hash)}", lambda stub: stub.Update, request, timeout_s
        )
        return session_from_pb(response.session)

    def touch(self, token: str, *, timeout_s: float | None = None) -> Session:
        """Refresh the session's last access now (never extends its absolute deadline)."""
        token_hash = hash_token(token)
        request = pb.TouchRequest(token_hash=token_hash)
        response = self._mutate(
            f"touch {hash_prefix(token_hash)}", lambda stub: stub.Touch, request, timeout_s
        )
        return session_from_pb(response.session)

    def rotate(self, token: str, *, principal: str | None = None, timeout_s: float | None = None) -> Rotated:
        """Move the session to a new token (do this at login); the old token stops working.

        `principal` binds or re-binds the session; None keeps the current binding. The
        returned `Rotated.token` is the NEW token to hand to the browser. On OutcomeUnknown,
        `exc.token` is that new token: if `validate(exc.token)` finds the session, the rotate
        took effect and the browser needs the new token; on NotFound the old one still works.
        """
        token_hash = hash_token(token)
        fresh = new_token()
        request = pb.RotateRequest(token_hash=token_hash, new_token_hash=hash_token(fresh))
        if principal is not None:
            request.principal = principal
        response = self._mutate_to_token(
            f"rotate {hash_prefix(token_hash)}", lambda stub: stub.Rotate, request, timeout_s, fresh
        )
        return Rotated(fresh, session_from_pb(response.session), tuple(response.evicted_handles))

    def delete(self, token: str, *, timeout_s: float | None = None) -> bool:
        """End the session (logout); returns whether it existed. Idempotent."""
        token_hash = hash_token(token)
        return self._delete(pb.DeleteRequest(token_hash=token_hash), hash_prefix(token_hash), timeout_s)

    def delete_handle(self, handle: str, *, timeout_s: float | None = None) -> bool:
        """End a session by its non-secret handle (e.g. from list_sessions)."""
        return self._delete(pb.DeleteRequest(handle=handle), f"handle {handle}", timeout_s)

    def _delete(self, request: pb.DeleteRequest, what: str, timeout_s: float | None) -> bool:
        response = self._mutate(f"delete {what}", lambda stub: stub.Delete, request, timeout_s)
        return response.existed

    def revoke_principal(
        self, principal: str, *, except_handle: str | None = None, timeout_s: float | None = None
    ) -> list[str]:
        """End all of a principal's sessions, optionally but one; returns the ended handles."""
        request = pb.RevokePrincipalRequest(principal=principal, except_handle=except_handle or "")
        response = self._mutate("revoke_principal", lambda stub: stub.RevokePrincipal, request, timeout_s)
        return list(response.revoked_handles)

    # -- reads: no request id; retried freely ----------------------------------------------

    def validate(
        self, token: str, *, touch: bool = False, stale: bool = False, timeout_s: float | None = None
    ) -> Session:
        """Return the session with its attributes, or raise NotFound.

        `stale=True` lets any node answer from local state (faster, may lag or miss a
        recent logout; spread over the nodes); it is ignored with `touch=True`. A touch
        is idempotent at the node, so it is retried like a read. Linearizable reads go to
        the leader, or to any node with `read_from="any"`: each answer includes every write
        acknowledged before the call.
        """
        token_hash = hash_token(token)
        consistency = pb.STALE if stale and not touch else pb.LINEARIZABLE
        request = pb.ValidateRequest(token_hash=token_hash, touch=touch, consistency=consistency)
        response = self._caller.call(
            f"validate {hash_prefix(token_hash)}",
            lambda stub: stub.Validate,
            request,
            mutation=False,
            leader_only=consistency == pb.LINEARIZABLE and not self._reads_anywhere,
            timeout_s=self._deadline(timeout_s),
            batch_kind="validate",
        )
        return session_from_pb(response.session)

    def list_sessions(self, principal: str, *, timeout_s: float | None = None) -> list[Session]:
        """The principal's live sessions, metadata only (for a "your devices" page)."""
        response = self._caller.call(
            "list_sessions",
            lambda stub: stub.ListSessions,
            pb.ListSessionsRequest(principal=principal),
            mutation=False,
            leader_only=not self._reads_anywhere,
            timeout_s=self._deadline(timeout_s),
        )
        return [session_from_pb(s) for s in response.sessions]

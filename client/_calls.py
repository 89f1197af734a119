"""What each public method sends and how its answer is read: one `Call` per method.

Also `ClientCore`, the options, leader guess and deadline both clients hold.

`SessionClient` and `AsyncSessionClient` differ only in how they wait; both turn their
arguments into the same `Call` here and convert the answer with the same `read`, so a
request field or a conversion cannot drift between them. A `Call` names the RPC by its
method name on the stub (`"Create"`): the generated sync and async stubs share those names.

Tokens are made here (create, rotate) and hashed here; the node, the log and the logs of
this library only ever see hashes. Labels name calls in logs and never contain a token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sessionquorum.proto import sessionquorum_pb2 as pb

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

_T = TypeVar("_T")

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


@dataclass(frozen=True, slots=True)
class Call(Generic[_T]):
    """One logical call: the message every attempt sends, and how to read the answer.

    `mutation` calls carry a leased request id (_lanes.py). `batch_kind` (a BatchItem field
    name) lets an attempt travel in a Batch with concurrent calls (_coalesce.py). `token`
    is the token a create or rotate installs: an OutcomeUnknown carries it.
    """

    label: str
    method: str
    request: Any
    read: Callable[[Any], _T]
    mutation: bool
    leader_only: bool
    batch_kind: str | None = None
    token: str | None = None


def positive_seconds(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


class ClientCore:
    """What both clients hold: checked options, the shared leader guess, the default deadline.

    Plaintext must be asked for (`insecure=True`): the token hashes a client sends are
    credentials against the store, so the default is to refuse to run without TLS.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        tls: object | None,
        insecure: bool,
        timeout_s: float,
        attempt_timeout_s: float,
        max_message_bytes: int,
        read_from: str,
    ) -> None:
        if read_from not in (READ_FROM_LEADER, READ_FROM_ANY):
            raise ValueError(f"read_from must be {READ_FROM_LEADER!r} or {READ_FROM_ANY!r}: {read_from!r}")
        if tls is None and not insecure:
            raise ValueError("pass tls=TLSConfig(...), or insecure=True to use plaintext deliberately")
        if tls is not None and insecure:
            raise ValueError("tls and insecure=True contradict each other; pass one")
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        self._reads_anywhere = read_from == READ_FROM_ANY
        self._timeout_s = positive_seconds("timeout_s", timeout_s)
        self._attempt_timeout_s = positive_seconds("attempt_timeout_s", attempt_timeout_s)
        self._router = Router(endpoints)

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The known endpoints: those given, plus any learned from leader hints."""
        return self._router.endpoints

    def _deadline(self, timeout_s: float | None) -> float:
        return self._timeout_s if timeout_s is None else positive_seconds("timeout_s", timeout_s)


def _mutation(
    label: str,
    method: str,
    request: Any,
    read: Callable[[Any], _T],
    kind: str | None,
    token: str | None = None,
) -> Call[_T]:
    return Call(label, method, request, read, mutation=True, leader_only=True, batch_kind=kind, token=token)


def _session(response: Any) -> Session:
    return session_from_pb(response.session)


def create(
    principal: str | None,
    attributes: Mapping[str, bytes] | None,
    idle_timeout_s: float,
    absolute_timeout_s: float,
) -> Call[Created]:
    token = new_token()
    token_hash = hash_token(token)
    request = pb.CreateRequest(
        token_hash=token_hash,
        principal=principal or "",
        attributes=attributes_to_pb(attributes),
        idle_timeout_ms=seconds_to_ms("idle_timeout_s", idle_timeout_s),
        absolute_timeout_ms=seconds_to_ms("absolute_timeout_s", absolute_timeout_s),
    )

    def read(response: pb.CreateResponse) -> Created:
        return Created(token, session_from_pb(response.session), tuple(response.evicted_handles))

    return _mutation(f"create {hash_prefix(token_hash)}", "Create", request, read, "create", token)


def update(
    token: str,
    set: Mapping[str, bytes] | None,
    delete: Iterable[str] | None,
    increment: Mapping[str, int] | None,
    expected_version: int | None,
    idle_timeout_s: float | None = None,
) -> Call[Session]:
    token_hash = hash_token(token)
    request = pb.UpdateRequest(
        token_hash=token_hash,
        set=attributes_to_pb(set),
        delete=names_to_pb(delete),
        increment=[pb.Increment(name=encode_name(n), delta=d) for n, d in (increment or {}).items()],
    )
    if expected_version is not None:
        request.expected_version = expected_version
    if idle_timeout_s is not None:
        request.idle_timeout_ms = seconds_to_ms("idle_timeout_s", idle_timeout_s)
    return _mutation(f"update {hash_prefix(token_hash)}", "Update", request, _session, "update")


def touch(token: str) -> Call[Session]:
    token_hash = hash_token(token)
    request = pb.TouchRequest(token_hash=token_hash)
    return _mutation(f"touch {hash_prefix(token_hash)}", "Touch", request, _session, "touch")


def rotate(token: str, principal: str | None, grace: bool = False) -> Call[Rotated]:
    token_hash = hash_token(token)
    fresh = new_token()
    request = pb.RotateRequest(token_hash=token_hash, new_token_hash=hash_token(fresh), grace=grace)
    if principal is not None:
        request.principal = principal

    def read(response: pb.RotateResponse) -> Rotated:
        return Rotated(fresh, session_from_pb(response.session), tuple(response.evicted_handles))

    return _mutation(f"rotate {hash_prefix(token_hash)}", "Rotate", request, read, "rotate", fresh)


def _existed(response: pb.DeleteResponse) -> bool:
    return response.existed


def delete(token: str) -> Call[bool]:
    token_hash = hash_token(token)
    request = pb.DeleteRequest(token_hash=token_hash)
    return _mutation(f"delete {hash_prefix(token_hash)}", "Delete", request, _existed, "delete")


def delete_handle(handle: str) -> Call[bool]:
    return _mutation(f"delete handle {handle}", "Delete", pb.DeleteRequest(handle=handle), _existed, "delete")


def _revoked(response: pb.RevokePrincipalResponse) -> list[str]:
    return list(response.revoked_handles)


def _scope(token: str | None) -> bytes:
    """The proof an app-role certificate gives that it acts for a principal: a session's hash."""
    return hash_token(token) if token is not None else b""


def revoke_principal(principal: str, except_handle: str | None, token: str | None = None) -> Call[list[str]]:
    request = pb.RevokePrincipalRequest(
        principal=principal, except_handle=except_handle or "", session_token_hash=_scope(token)
    )
    return _mutation("revoke_principal", "RevokePrincipal", request, _revoked, None)


def _ended(response: pb.SetPrincipalEnabledResponse) -> list[str]:
    return list(response.ended_handles)


def set_principal_enabled(principal: str, enabled: bool) -> Call[list[str]]:
    # Idempotent at the node (disabling a disabled principal changes nothing), and exactly-once.
    request = pb.SetPrincipalEnabledRequest(principal=principal, enabled=enabled)
    label = "enable_principal" if enabled else "disable_principal"
    return _mutation(label, "SetPrincipalEnabled", request, _ended, None)


def validate(token: str, touch: bool, stale: bool, *, reads_anywhere: bool) -> Call[Session]:
    # A touch is idempotent at the node, so it is retried like a read; stale is ignored with it.
    token_hash = hash_token(token)
    consistency = pb.STALE if stale and not touch else pb.LINEARIZABLE
    request = pb.ValidateRequest(token_hash=token_hash, touch=touch, consistency=consistency)
    return Call(
        f"validate {hash_prefix(token_hash)}",
        "Validate",
        request,
        _session,
        mutation=False,
        leader_only=consistency == pb.LINEARIZABLE and not reads_anywhere,
        batch_kind="validate",
    )


# A refresh follows at most this many "ask the leader instead" answers.
MEMBER_REFRESH_TRIES = 3
MemberView = tuple[bool, str, tuple[str, ...]]


def _member_view(response: pb.StatusResponse) -> MemberView:
    return response.is_leader, response.leader_address, tuple(response.member_grpc_addresses)


def members() -> Call[MemberView]:
    """The answering node's view of the members (Status, which the app role may call)."""
    return Call("members", "Status", pb.StatusRequest(), _member_view, mutation=False, leader_only=True)


def _sessions(response: pb.ListSessionsResponse) -> list[Session]:
    return [session_from_pb(s) for s in response.sessions]


def list_sessions(principal: str, token: str | None = None, *, reads_anywhere: bool) -> Call[list[Session]]:
    request = pb.ListSessionsRequest(principal=principal, session_token_hash=_scope(token))
    return Call(
        "list_sessions", "ListSessions", request, _sessions, mutation=False, leader_only=not reads_anywhere
    )

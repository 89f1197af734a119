"""Who may call what: roles bound to the client certificate, checked before any handler runs.

A role is a URI in the client certificate's subjectAltName: `sessionquorum:role:app` or
`sessionquorum:role:admin` (`role_uri`). Why a SAN URI and not the subject's OU: the SAN is
a typed, multi-valued extension made for identities (SPIFFE IDs are SAN URIs), which gRPC
and every X.509 library expose as such; an OU is free text that organisations already use
for other things, its multi-valued forms are ambiguous, and public CAs dropped it in 2022.
A certificate without any role URI (the old `init`'s client.pem, or a foreign tool's) gets
`server.roleless_client_role`: "app" by default (least privilege that keeps applications
working), "admin" for an operator finishing an upgrade, or "none" to refuse it.

The table (`APP_RULES`): admin may call every method; app may call a method only if it is
listed, under the listed condition. A method NOT in the table is admin-only (default deny),
so an RPC another change adds is safe until someone decides to list it. Health checks are
listed: they answer nothing about sessions and load balancers need them.

A certificate whose SHA-256 fingerprint is in the cluster's revocation list
(`tls_revoked_file`, default tls/revoked.txt; `sessionquorum certs rotate` appends to it) is
refused whatever its role: gRPC's TLS has no CRL support, so this is where a leaked client
certificate stops working. Each node re-reads the file within `REVOCATION_POLL_S` of a change.

`Authorizer` wraps every method's handler where it is registered (`registry`; not an
interceptor, which measurably cost every call): the wrapper reads the peer certificate from
`context.auth_context()` and refuses with PERMISSION_DENIED, one log line (the certificate's
common name, its roles, the method) and a metric, before the handler (and so before any
validation, proposal or read) runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .config import read_revoked
from .decoding import Undecodable
from .errors import ConfigError

log = logging.getLogger(__name__)

ROLE_URI_PREFIX = "sessionquorum:role:"
SERVICE = "/sessionquorum.v1.SessionStore/"
HEALTH = "/grpc.health.v1.Health/"
# Distinct certificates remembered (their parsed identity), least recently used dropped
# first: a caller cycling through certificates costs parses, never memory.
IDENTITY_CACHE_ENTRIES = 256
NODE_METADATA_KEY = "sq-node"
# How often a node looks at its revocation list for changes (one stat call).
REVOCATION_POLL_S = 1.0


class Role(enum.Enum):
    APP = "app"
    ADMIN = "admin"


def role_uri(role: Role) -> str:
    """The SAN URI that gives a certificate `role`."""
    return ROLE_URI_PREFIX + role.value


@dataclass(frozen=True, slots=True)
class Identity:
    """A caller as its certificate names it: common name (for logs) and the roles it carries."""

    name: str
    roles: frozenset[Role]
    # True when the certificate named no role at all (roles then come from the config).
    roleless: bool = False
    # SHA-256 of the certificate's DER: what a revocation list names (b"" without one).
    fingerprint: bytes = b""


# An app-role condition: None when the request is allowed, else why not (for the message).
AppRule = Callable[[Any], str | None]


def _always(request: Any) -> str | None:
    return None


def _status_without_digest(request: Any) -> str | None:
    # A digest snapshots and hashes the whole state: an operator's convergence check.
    if not isinstance(request, Undecodable) and request.digest:
        return "Status with digest is for the admin role"
    return None


def _scoped_to_a_session(request: Any) -> str | None:
    # The app acts for one principal at a time: it proves it by a live session of that
    # principal (the service checks the session, SessionService._check_scope).
    if not isinstance(request, Undecodable) and not request.session_token_hash:
        return "an app certificate must name a live session of the principal (session_token_hash)"
    return None


# Batch item kind -> the method whose rules it follows.
BATCH_ITEM_METHODS: Mapping[str, str] = {
    "validate": "Validate",
    "create": "Create",
    "update": "Update",
    "touch": "Touch",
    "rotate": "Rotate",
    "delete": "Delete",
}


def _batch_of_session_operations(request: Any) -> str | None:
    if isinstance(request, Undecodable):
        return None
    for index, item in enumerate(request.items):
        kind = item.WhichOneof("op")
        if kind is None:
            continue  # refused by the batch itself as an item without an operation
        method = BATCH_ITEM_METHODS.get(kind)
        rule = APP_RULES.get(SERVICE + method) if method is not None else None
        why = rule(getattr(item, kind)) if rule is not None else "not a session operation"
        if why is not None:
            return f"batch item {index} ({kind}): {why}"
    return None


APP_RULES: Mapping[str, AppRule] = {
    SERVICE + "Create": _always,
    SERVICE + "Validate": _always,
    SERVICE + "Update": _always,
    SERVICE + "Touch": _always,
    SERVICE + "Rotate": _always,
    SERVICE + "Delete": _always,
    SERVICE + "Batch": _batch_of_session_operations,
    SERVICE + "ListSessions": _scoped_to_a_session,
    SERVICE + "RevokePrincipal": _scoped_to_a_session,
    SERVICE + "Status": _status_without_digest,
    HEALTH + "Check": _always,
    HEALTH + "Watch": _always,
}


# What a request-streaming method's rule is given: only an unconditional rule passes it.
NO_REQUEST = Undecodable("(request stream)", "not inspected")


def refusal(
    identity: Identity, method: str, request: Any, revoked: frozenset[bytes] = frozenset()
) -> str | None:
    """None when `identity` may call `method` with `request`, else the reason (for the caller)."""
    if identity.fingerprint and identity.fingerprint in revoked:
        return f"the certificate of {identity.name!r} is revoked"
    if Role.ADMIN in identity.roles:
        return None
    if Role.APP in identity.roles:
        rule = APP_RULES.get(method)
        if rule is None or (request is NO_REQUEST and rule is not _always):
            return f"{_short(method)} is for the admin role"
        return rule(request)
    return f"the certificate of {identity.name!r} carries no role this node accepts"


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1]


def roles_of(cert: x509.Certificate) -> frozenset[Role] | None:
    """The roles a certificate's SAN URIs name; None when it names none (role-less)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = [
        u for u in sans.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(ROLE_URI_PREFIX)
    ]
    if not uris:
        return None
    known = {r.value: r for r in Role}
    # An unknown role name (a later release's) grants nothing here.
    return frozenset(known[name] for u in uris if (name := u[len(ROLE_URI_PREFIX) :]) in known)


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def roleless_roles(setting: str) -> frozenset[Role]:
    """What `server.roleless_client_role` grants a certificate without a role URI."""
    return frozenset() if setting == "none" else frozenset({Role(setting)})


class IdentityCache:
    """Certificate PEM -> Identity, bounded: parsing X.509 per call would cost every request."""

    def __init__(self, roleless: frozenset[Role], entries: int = IDENTITY_CACHE_ENTRIES) -> None:
        self._roleless = roleless
        self._entries = entries
        self._cache: OrderedDict[bytes, Identity] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    def identity(self, pem: bytes | None) -> Identity:
        if pem is None:
            # No client certificate (tls_client_auth false, or no TLS at all): role-less.
            return Identity("(no client certificate)", self._roleless, roleless=True)
        found = self._cache.get(pem)
        if found is not None:
            self._cache.move_to_end(pem)
            return found
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            found = Identity("(unparsable certificate)", frozenset())
        else:
            roles = roles_of(cert)
            name = _common_name(cert)
            print_ = cert.fingerprint(hashes.SHA256())
            found = (
                Identity(name, self._roleless, True, print_)
                if roles is None
                else Identity(name, roles, False, print_)
            )
        self._cache[pem] = found
        if len(self._cache) > self._entries:
            self._cache.popitem(last=False)
        return found


def peer_certificate(context: grpc.aio.ServicerContext[Any, Any]) -> bytes | None:
    """The caller's certificate (PEM) as TLS verified it, or None without one."""
    certs = list(context.auth_context().get("x509_pem_cert", ()))
    return bytes(certs[0]) if certs else None


def caller_name(context: Any) -> str:
    """The common name of the caller's certificate, for a log line (parsed afresh: refusals only)."""
    auth_context = getattr(context, "auth_context", None)  # a Batch item's context has none
    pem = peer_certificate(context) if auth_context is not None else None
    if pem is None:
        return "(no client certificate)"
    try:
        return _common_name(x509.load_pem_x509_certificate(pem))
    except ValueError:
        return "(unparsable certificate)"


# Called with the method's short name for each refusal (the node counts it in metrics).
Refused = Callable[[str], None]
Behaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
Check = Callable[[str, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]


class Authorizer:
    """Checks every call's role before its handler runs (see the module docstring).

    Not a grpc.aio interceptor: an interceptor costs every call two more coroutines, a
    partial and a handler lookup through it, before the handler's own wrapper; measured on
    the leader. `registry(server)` wraps each method handler once, where it is registered,
    so a call pays one synchronous check (`refusal_of`) and nothing else when allowed.
    """

    def __init__(
        self, roleless: frozenset[Role], node_id: str, on_refused: Refused, enabled: bool = True
    ) -> None:
        self.identities = IdentityCache(roleless)
        self._node_id = node_id
        self._on_refused = on_refused
        # False only for the integration test's canary (server.unsafe_skip_authorization).
        self._enabled = enabled
        # Fingerprints of revoked certificates (config.read_revoked), replaced whole by the
        # watcher: a reader sees the old set or the new one, never a mix.
        self.revoked: frozenset[bytes] = frozenset()

    def registry(self, server: grpc.aio.Server) -> GuardedRegistry:
        """What servicers register with instead of `server`: every handler they add is guarded."""
        return GuardedRegistry(server, self.guard)

    def refusal_of(
        self, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[Identity, str] | None:
        """None when the caller may call `method` with `request`, else (who, why). Synchronous:
        an allowed call awaits nothing here."""
        if not self._enabled:
            return None
        pem = next(iter(context.auth_context().get("x509_pem_cert", ())), None)
        identity = self.identities.identity(pem)
        why = refusal(identity, method, request, self.revoked)
        return None if why is None else (identity, why)

    async def refuse(
        self, method: str, refused: tuple[Identity, str], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """PERMISSION_DENIED with one log line and a metric; raises (context.abort)."""
        identity, why = refused
        roles = ",".join(sorted(r.value for r in identity.roles)) or "none"
        if identity.roleless:
            roles += " (the certificate names none: server.roleless_client_role)"
        log.info(
            "refused a request: PERMISSION_DENIED: %s (certificate %r, roles %s): %s",
            _short(method),
            identity.name,
            roles,
            why,
        )
        self._on_refused(_short(method))
        context.set_trailing_metadata(((NODE_METADATA_KEY, self._node_id),))
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"permission denied: {why}")

    async def _check(self, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        refused = self.refusal_of(method, request, context)
        if refused is not None:
            await self.refuse(method, refused, context)

    def guard(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        """`handler` with the role check first (`method` is its full name, /package.Service/Name)."""
        des, ser = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            inner_uu = cast(Behaviour, handler.unary_unary)
            refusal_of, refuse = self.refusal_of, self.refuse

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                refused = refusal_of(method, request, context)
                if refused is not None:
                    await refuse(method, refused, context)
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, des, ser)
        check = self._check
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _streamed(check, method, handler.unary_stream, False), des, ser
            )
        if handler.stream_unary is not None:
            inner_su = cast(Behaviour, handler.stream_unary)

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await check(method, NO_REQUEST, context)
                return await inner_su(requests, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, des, ser)
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            _streamed(check, method, handler.stream_stream, True), des, ser
        )


Guard = Callable[[str, "grpc.RpcMethodHandler[Any, Any]"], "grpc.RpcMethodHandler[Any, Any]"]


class _GuardedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come out guarded (each wrapped once)."""

    def __init__(self, inner: grpc.GenericRpcHandler, guard: Guard) -> None:
        self._inner = inner
        self._guard = guard
        # Bounded by the methods `inner` serves: an unknown method has no handler, stops below.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self._guard(method, handler))
        return cached[1]


class GuardedRegistry:
    """Stands in for the grpc.aio server where servicers register (the generated
    `add_..._to_server`, decoding.add_servicer): every handler reaches the server guarded,
    the generic ones and the registered-method table alike. node.py registers every
    servicer through it, so a method nobody listed is admin-only here too (default deny)."""

    def __init__(self, server: grpc.aio.Server, guard: Guard) -> None:
        self._server = server
        self._guard = guard

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_GuardedGeneric(h, self._guard) for h in handlers))

    def add_registered_method_handlers(
        self, service_name: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        guarded = {name: self._guard(f"/{service_name}/{name}", h) for name, h in handlers.items()}
        self._server.add_registered_method_handlers(service_name, guarded)


def _streamed(check: Check, method: str, inner: Any, request_stream: bool) -> Any:
    """A response-streaming behaviour with the check first, in the shape grpc.aio expects of
    `inner`: an async generator stays one; a coroutine that writes with context.write stays one."""
    if inspect.isasyncgenfunction(inner):

        async def generator(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await check(method, NO_REQUEST if request_stream else request, context)
            async for response in inner(request, context):
                yield response

        return generator

    async def writer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await check(method, NO_REQUEST if request_stream else request, context)
        return await inner(request, context)

    return writer


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


async def watch_revocations(path: Path, authorizer: Authorizer, stop: asyncio.Event) -> None:
    """Reload the revocation list when the file changes, until `stop`; never raises.

    A list that does not parse is logged and the previous one kept: a typo must not
    un-revoke a certificate (nor revoke every caller). The node read it once at start
    (node.py), where a bad list stops the node instead.
    """
    # Unknown: read on the first round too, so a change between the node's own read at
    # start and this task's first run is not missed.
    seen: tuple[int, int, int] | str | None = "unread"
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REVOCATION_POLL_S)
        stamp = _stamp(path)
        if stamp == seen:
            continue
        seen = stamp
        try:
            revoked = await asyncio.to_thread(read_revoked, path)
        except ConfigError as exc:
            log.warning("keeping the previous revocation list (%d revoked): %s", len(authorizer.revoked), exc)
            continue
        authorizer.revoked = revoked
        log.info("revocation list %s: %d certificate(s) revoked", path, len(revoked))

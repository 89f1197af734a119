"""The role table and the certificate parsing of store/authz.py, without a network."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from sessionquorum.cluster import _tls as tls_material
from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.store import authz
from sessionquorum.store.authz import APP_RULES, NO_REQUEST, SERVICE, Identity, IdentityCache, Role, refusal
from sessionquorum.store.config import ServerSettings
from sessionquorum.store.decoding import Undecodable
from sessionquorum.store.errors import ConfigError

APP = Identity("app", frozenset({Role.APP}))
ADMIN = Identity("admin", frozenset({Role.ADMIN}))
NOBODY = Identity("nobody", frozenset())
HASH = b"\x01" * 31 + b"\x02"
SESSION_METHODS = ("Create", "Validate", "Update", "Touch", "Rotate", "Delete")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def ca() -> tls_material.Issued:
    return tls_material.create_ca()


# Admin-only on purpose (and what this round adds, until someone lists it for app).
ADMIN_ONLY = {
    "Configure",
    "SnapshotSave",
    "LeaderTransfer",
    "MemberList",
    "MemberAdd",
    "MemberRemove",
    "Events",
    "SetPrincipalEnabled",
}


def test_every_method_of_the_service_is_either_listed_for_app_or_admin_only_by_default() -> None:
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["SessionStore"].methods}
    listed = {m.removeprefix(SERVICE) for m in APP_RULES if m.startswith(SERVICE)}
    assert listed <= methods
    assert methods - listed == ADMIN_ONLY  # a new method is admin until listed


@pytest.mark.parametrize("method", SESSION_METHODS)
def test_app_may_make_session_operations(method: str) -> None:
    assert refusal(APP, SERVICE + method, object()) is None


def test_an_unlisted_method_is_admin_only_default_deny() -> None:
    for method in (SERVICE + "Configure", SERVICE + "TransferLeadership", "/other.Service/Anything"):
        assert refusal(APP, method, object()) == f"{method.rsplit('/', 1)[1]} is for the admin role"
        assert refusal(ADMIN, method, object()) is None


def test_a_certificate_without_an_accepted_role_may_call_nothing() -> None:
    why = refusal(NOBODY, SERVICE + "Validate", object())
    assert why is not None and "carries no role" in why


def test_status_with_digest_is_admin_only_and_without_open_to_app() -> None:
    assert refusal(APP, SERVICE + "Status", pb.StatusRequest()) is None
    assert (
        refusal(APP, SERVICE + "Status", pb.StatusRequest(digest=True))
        == "Status with digest is for the admin role"
    )
    assert refusal(ADMIN, SERVICE + "Status", pb.StatusRequest(digest=True)) is None


@pytest.mark.parametrize(
    ("method", "request_type"),
    [("ListSessions", pb.ListSessionsRequest), ("RevokePrincipal", pb.RevokePrincipalRequest)],
)
def test_listing_and_revoking_need_a_session_of_the_principal_from_app_not_from_admin(
    method: str, request_type: type[pb.ListSessionsRequest] | type[pb.RevokePrincipalRequest]
) -> None:
    why = refusal(APP, SERVICE + method, request_type(principal="bob"))
    assert why is not None and "session_token_hash" in why
    assert refusal(APP, SERVICE + method, request_type(principal="bob", session_token_hash=HASH)) is None
    assert refusal(ADMIN, SERVICE + method, request_type(principal="bob")) is None


def test_app_batch_of_session_operations_passes_and_an_item_the_table_does_not_allow_is_refused() -> None:
    ok = pb.BatchRequest(
        items=[
            pb.BatchItem(validate=pb.ValidateRequest(token_hash=HASH)),
            pb.BatchItem(touch=pb.TouchRequest()),
        ]
    )
    assert refusal(APP, SERVICE + "Batch", ok) is None

    class Item:  # a batch item kind another change might add (not a session operation)
        def WhichOneof(self, _: str) -> str:
            return "configure"

    class Batch:
        items = [pb.BatchItem(create=pb.CreateRequest()), Item()]

    assert refusal(APP, SERVICE + "Batch", Batch()) == "batch item 1 (configure): not a session operation"
    assert refusal(ADMIN, SERVICE + "Batch", Batch()) is None


def test_undecodable_requests_pass_to_the_handler_only_where_app_may_call_the_method() -> None:
    bad = Undecodable("StatusRequest", "truncated")
    assert refusal(APP, SERVICE + "Status", bad) is None  # the handler answers INVALID_ARGUMENT
    assert refusal(APP, SERVICE + "Configure", bad) is not None


def test_a_request_stream_passes_only_an_unconditional_rule() -> None:
    assert refusal(APP, "/grpc.health.v1.Health/Watch", NO_REQUEST) is None
    assert refusal(APP, SERVICE + "ListSessions", NO_REQUEST) == "ListSessions is for the admin role"


def test_roles_come_from_the_san_uris_of_the_certificates_init_issues(ca: tls_material.Issued) -> None:
    for role in Role:
        cert = tls_material.issue_leaf(ca, f"c-{role.value}", ("c",), server=False, role=role).cert
        assert authz.roles_of(cert) == frozenset({role})
        assert authz.role_uri(role) in cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
    roleless = tls_material.issue_leaf(ca, "old", ("old",), server=False).cert
    assert authz.roles_of(roleless) is None


def test_an_unknown_role_name_grants_nothing(ca: tls_material.Issued) -> None:
    issued = tls_material.issue_leaf(ca, "future", ("future",), server=False)
    builder = (
        x509.CertificateBuilder()
        .subject_name(issued.cert.subject)
        .issuer_name(issued.cert.issuer)
        .public_key(issued.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(issued.cert.not_valid_before_utc)
        .not_valid_after(issued.cert.not_valid_after_utc)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("sessionquorum:role:root")]), False
        )
    )
    cert = builder.sign(ca.key, hashes.SHA256())
    assert authz.roles_of(cert) == frozenset()
    assert IdentityCache(frozenset({Role.ADMIN})).identity(_pem(cert)).roles == frozenset()


@pytest.mark.parametrize(
    ("setting", "roles"),
    [("app", {Role.APP}), ("admin", {Role.ADMIN}), ("none", set())],
)
def test_a_roleless_certificate_gets_the_configured_role(
    ca: tls_material.Issued, setting: str, roles: set[Role]
) -> None:
    cache = IdentityCache(authz.roleless_roles(setting))
    pem = _pem(tls_material.issue_leaf(ca, "old-client", ("old-client",), server=False).cert)
    identity = cache.identity(pem)
    assert (identity.name, identity.roles, identity.roleless) == ("old-client", frozenset(roles), True)
    assert cache.identity(None).roles == frozenset(roles)


def test_roleless_setting_is_validated() -> None:
    assert ServerSettings().roleless_client_role == "app"  # least privilege by default
    with pytest.raises(ConfigError, match="roleless_client_role"):
        ServerSettings(roleless_client_role="root").validate()


def test_identity_cache_is_bounded_and_keeps_the_latest(ca: tls_material.Issued) -> None:
    cache = IdentityCache(frozenset(), entries=2)
    pems = [
        _pem(tls_material.issue_leaf(ca, f"c{i}", ("c",), server=False, role=Role.APP).cert) for i in range(3)
    ]
    assert [cache.identity(p).name for p in pems] == ["c0", "c1", "c2"]
    assert len(cache) == 2
    assert [cache.identity(p).name for p in pems[1:]] == ["c1", "c2"]
    assert cache.identity(b"not a certificate").roles == frozenset()
    assert len(cache) == 2


class _Aborted(Exception):
    pass


class _Context:
    """What the guard reads of a grpc.aio context: the peer certificate; abort raises."""

    def __init__(self, pem: bytes | None) -> None:
        self._pem = pem
        self.aborted: tuple[object, str] | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {} if self._pem is None else {"x509_pem_cert": [self._pem]}

    def set_trailing_metadata(self, metadata: object) -> None:
        pass

    async def abort(self, code: object, details: str) -> None:
        self.aborted = (code, details)
        raise _Aborted(details)


class _Server:
    def __init__(self) -> None:
        self.generic: list[object] = []
        self.registered: dict[str, dict[str, object]] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        self.generic.extend(handlers)  # type: ignore[call-overload]

    def add_registered_method_handlers(self, service_name: str, handlers: dict[str, object]) -> None:
        self.registered[service_name] = handlers


def test_every_handler_registered_through_the_registry_is_guarded_generic_and_table_alike(
    ca: tls_material.Issued,
) -> None:
    called: list[str] = []

    def behaviour(name: str) -> object:
        async def run(request: object, context: object) -> str:
            called.append(name)
            return name

        return grpc.unary_unary_rpc_method_handler(run)

    table = {"Validate": behaviour("Validate"), "Configure": behaviour("Configure")}
    refused: list[str] = []
    authorizer = authz.Authorizer(frozenset({Role.APP}), "n1", refused.append)
    server = _Server()
    registry = authorizer.registry(server)  # type: ignore[arg-type]
    registry.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("sessionquorum.v1.SessionStore", table),)
    )
    registry.add_registered_method_handlers("sessionquorum.v1.SessionStore", table)
    app = _pem(tls_material.issue_leaf(ca, "app", ("app",), server=False, role=Role.APP).cert)
    admin = _pem(tls_material.issue_leaf(ca, "adm", ("adm",), server=False, role=Role.ADMIN).cert)

    class Details:
        def __init__(self, method: str) -> None:
            self.method = method
            self.invocation_metadata = ()

    generic = server.generic[0]
    assert generic.service(Details(SERVICE + "Nope")) is None  # type: ignore[attr-defined]
    handlers = [
        *(generic.service(Details(SERVICE + n)) for n in ("Validate", "Configure")),  # type: ignore[attr-defined]
        *server.registered["sessionquorum.v1.SessionStore"].values(),
    ]
    assert generic.service(Details(SERVICE + "Configure")) is handlers[1]  # type: ignore[attr-defined]

    async def call(handler: object, pem: bytes | None) -> _Context:
        context = _Context(pem)
        with contextlib.suppress(_Aborted):
            await handler.unary_unary(pb.ValidateRequest(), context)  # type: ignore[attr-defined]
        return context

    for validate, configure in (handlers[:2], handlers[2:]):
        assert asyncio.run(call(validate, app)).aborted is None
        denied = asyncio.run(call(configure, app))
        assert denied.aborted == (
            grpc.StatusCode.PERMISSION_DENIED,
            "permission denied: Configure is for the admin role",
        )
        assert asyncio.run(call(configure, admin)).aborted is None
    assert called == ["Validate", "Configure", "Validate", "Configure"]  # the refused calls ran nothing
    assert refused == ["Configure", "Configure"]


def test_a_revoked_certificate_is_refused_by_the_guard_even_for_a_session_operation(
    ca: tls_material.Issued,
) -> None:
    issued = tls_material.issue_leaf(ca, "app", ("app",), server=False, role=Role.APP).cert
    authorizer = authz.Authorizer(frozenset({Role.APP}), "n1", lambda method: None)

    async def run(request: object, context: object) -> str:
        return "ran"

    handler = authorizer.guard(SERVICE + "Validate", grpc.unary_unary_rpc_method_handler(run))
    context = _Context(_pem(issued))
    assert asyncio.run(handler.unary_unary(pb.ValidateRequest(), context)) == "ran"  # type: ignore[misc]
    authorizer.revoked = frozenset({issued.fingerprint(hashes.SHA256())})
    with pytest.raises(_Aborted, match="revoked"):
        asyncio.run(handler.unary_unary(pb.ValidateRequest(), context))  # type: ignore[misc]

"""Roles bound to the client certificate (store/authz.py), and revocation, on a real cluster.

An app-role certificate (tls/client.pem) is refused PERMISSION_DENIED for every admin
request, with one log line and a metric, and nothing changes; the admin certificate
(tls/admin.pem) succeeds. The canary disables the check (server.unsafe_skip_authorization)
and the app certificate gets through: without the check, this test fails.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sessionquorum.client._routing import trailers
from sessionquorum.cluster import LocalCluster, TLSFiles
from sessionquorum.cluster import _tls as tls_material
from sessionquorum.cluster._cli import main
from sessionquorum.cluster._status import client_credentials, secure_channel
from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

from .conftest import ClusterFactory
from .test_metrics import scrape

pytestmark = pytest.mark.cluster

DENIED = grpc.StatusCode.PERMISSION_DENIED
REFUSAL_LINE = "refused a request: PERMISSION_DENIED"


def h(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class Api:
    """A raw stub presenting one certificate, numbering request ids."""

    def __init__(self, cluster: LocalCluster, node_id: str, files: TLSFiles) -> None:
        self.channel = secure_channel(cluster.grpc_address(node_id), client_credentials(files))
        self.stub = pb_grpc.SessionStoreStub(self.channel)
        self.client_id = os.urandom(16)
        self.seq = 0

    def rid(self) -> pb.RequestId:
        self.seq += 1
        return pb.RequestId(client_id=self.client_id, sequence=self.seq)

    def create(self, token: bytes, principal: str) -> pb.CreateResponse:
        request = pb.CreateRequest(
            request_id=self.rid(),
            token_hash=h(token),
            principal=principal,
            idle_timeout_ms=60_000,
            absolute_timeout_ms=120_000,
        )
        return self.stub.Create(request, timeout=10)


@dataclass(frozen=True)
class AdminCall:
    name: str
    call: Callable[[Api], object]


def _admin_calls() -> list[AdminCall]:
    return [
        AdminCall(
            "ListSessions", lambda a: a.stub.ListSessions(pb.ListSessionsRequest(principal="bob"), timeout=10)
        ),
        AdminCall(
            "RevokePrincipal",
            lambda a: a.stub.RevokePrincipal(
                pb.RevokePrincipalRequest(request_id=a.rid(), principal="bob"), timeout=10
            ),
        ),
        AdminCall("Status", lambda a: a.stub.Status(pb.StatusRequest(digest=True), timeout=10)),
        AdminCall(
            "Configure",
            lambda a: a.stub.Configure(
                pb.ConfigureRequest(
                    request_id=a.rid(), limits_json=json.dumps({"max_sessions_per_principal": 9})
                ),
                timeout=10,
            ),
        ),
    ]


def _denied(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == DENIED, (info.value.code(), info.value.details())
    return info.value


@pytest.fixture
def cluster(make_cluster: ClusterFactory) -> LocalCluster:
    return make_cluster(3)


@pytest.fixture
def apis(cluster: LocalCluster) -> Iterator[tuple[Api, Api]]:
    leader = cluster.wait_for_leader()
    app, admin = Api(cluster, leader, cluster.tls_files), Api(cluster, leader, cluster.admin_tls_files)
    yield app, admin
    app.channel.close()
    admin.channel.close()


def _fingerprint(cluster: LocalCluster) -> dict[str, tuple[int, int, str]]:
    statuses = cluster.statuses(digest=True)
    result = {}
    for node_id, s in statuses.items():
        assert s is not None, node_id
        result[node_id] = (s.commit_index, s.last_applied, s.state_digest)
    return result


def test_app_certificate_is_refused_every_admin_call_with_one_log_line_a_metric_and_no_change(
    cluster: LocalCluster, apis: tuple[Api, Api]
) -> None:
    app, _ = apis
    app.create(b"bob-token", "bob")  # something for the admin calls to find
    leader = cluster.wait_for_leader()
    cluster.wait_until(lambda: len(set(_fingerprint(cluster).values())) == 1, 10.0, "convergence")
    before = _fingerprint(cluster)
    log_size = cluster.log_path(leader).stat().st_size
    calls = _admin_calls()
    for admin_call in calls:
        error = _denied(functools.partial(admin_call.call, app))
        assert (error.details() or "").startswith("permission denied: "), error.details()
        assert trailers(error).get("sq-node") == leader
    assert _fingerprint(cluster) == before
    with cluster.log_path(leader).open("rb") as f:
        f.seek(log_size)
        lines = [line for line in f.read().decode(errors="replace").splitlines() if REFUSAL_LINE in line]
    assert len(lines) == len(calls), lines
    for line, admin_call in zip(lines, calls, strict=True):
        assert f"{admin_call.name} (certificate 'sessionquorum-client', roles app)" in line, line
    samples = scrape(cluster, leader)
    for admin_call in calls:
        key = (("method", admin_call.name), ("why", "role"))
        assert samples[("sessionquorum_permission_denied_total", key)] == 1, admin_call.name


def test_admin_certificate_makes_every_admin_call(cluster: LocalCluster, apis: tuple[Api, Api]) -> None:
    _, admin = apis
    created = admin.create(b"bob-token", "bob")
    results = {c.name: c.call(admin) for c in _admin_calls()}
    listed = results["ListSessions"]
    assert isinstance(listed, pb.ListSessionsResponse)
    assert [s.handle for s in listed.sessions] == [created.session.handle]
    revoked = results["RevokePrincipal"]
    assert isinstance(revoked, pb.RevokePrincipalResponse)
    assert list(revoked.revoked_handles) == [created.session.handle]
    status = results["Status"]
    assert isinstance(status, pb.StatusResponse) and len(status.state_digest) == 64
    configured = results["Configure"]
    assert isinstance(configured, pb.ConfigureResponse)
    assert json.loads(configured.limits_json)["max_sessions_per_principal"] == 9


def test_app_certificate_keeps_session_operations_and_its_own_principals_listing(
    cluster: LocalCluster, apis: tuple[Api, Api]
) -> None:
    app, _ = apis
    bob = app.create(b"bob-token", "bob")
    app.create(b"eve-token", "eve")
    validated = app.stub.Validate(pb.ValidateRequest(token_hash=h(b"bob-token")), timeout=10)
    assert validated.session.handle == bob.session.handle
    status = app.stub.Status(pb.StatusRequest(), timeout=10)  # leader discovery, no digest
    assert status.state_digest == ""
    item = pb.BatchItem(validate=pb.ValidateRequest(token_hash=h(b"bob-token")))
    batch = app.stub.Batch(pb.BatchRequest(items=[item]), timeout=10)
    assert batch.results[0].validate.session.handle == bob.session.handle
    # Scoped: bob's own session vouches for listing bob; eve's does not.
    own = pb.ListSessionsRequest(principal="bob", session_token_hash=h(b"bob-token"))
    assert [s.handle for s in app.stub.ListSessions(own, timeout=10).sessions] == [bob.session.handle]
    other = pb.ListSessionsRequest(principal="bob", session_token_hash=h(b"eve-token"))
    assert "no live session of this principal" in (
        _denied(lambda: app.stub.ListSessions(other, timeout=10)).details() or ""
    )
    revoke = pb.RevokePrincipalRequest(
        request_id=app.rid(), principal="bob", session_token_hash=h(b"eve-token")
    )
    _denied(lambda: app.stub.RevokePrincipal(revoke, timeout=10))
    assert len(app.stub.ListSessions(own, timeout=10).sessions) == 1  # the refused revoke did nothing
    revoke = pb.RevokePrincipalRequest(
        request_id=app.rid(), principal="bob", session_token_hash=h(b"bob-token")
    )
    assert list(app.stub.RevokePrincipal(revoke, timeout=10).revoked_handles) == [bob.session.handle]
    leader = cluster.wait_for_leader()
    samples = scrape(cluster, leader)
    for method in ("ListSessions", "RevokePrincipal"):
        scope = (("method", method), ("why", "scope"))
        assert samples[("sessionquorum_permission_denied_total", scope)] == 1, method
    lines = [
        line
        for line in cluster.log_path(leader).read_text(errors="replace").splitlines()
        if REFUSAL_LINE in line and "(certificate 'sessionquorum-client'): permission denied: " in line
    ]
    assert [line.split(REFUSAL_LINE + ": ")[1].split(" ")[0] for line in lines] == [
        "ListSessions",
        "RevokePrincipal",
    ]


def _roleless_files(cluster: LocalCluster, where: Path) -> TLSFiles:
    """A client certificate as the old `init` made them: signed by the cluster CA, no role."""
    ca_key = serialization.load_pem_private_key((cluster.data_dir / "secrets" / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(cluster.tls_files.ca.read_bytes())
    issued = tls_material.issue_leaf(
        tls_material.Issued(ca_key, ca_cert), "old-client", ("old-client",), server=False
    )
    files = TLSFiles(ca=cluster.tls_files.ca, cert=where / "old.pem", key=where / "old.key")
    tls_material.write_issued(issued, files.cert, files.key)
    return files


def test_roleless_certificate_counts_as_app_by_default(cluster: LocalCluster, tmp_path: Path) -> None:
    old = Api(cluster, cluster.wait_for_leader(), _roleless_files(cluster, tmp_path))
    try:
        old.create(b"old-token", "carol")  # session operations still work after the upgrade
        error = _denied(lambda: old.stub.Status(pb.StatusRequest(digest=True), timeout=10))
        assert "is for the admin role" in (error.details() or "")
    finally:
        old.channel.close()


def test_canary_without_the_check_the_app_certificate_gets_admin_calls_through(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(1, overrides={"server": {"unsafe_skip_authorization": True}})
    app = Api(cluster, cluster.wait_for_leader(), cluster.tls_files)
    try:
        app.create(b"bob-token", "bob")
        through = [c.name for c in _admin_calls() if c.call(app) is not None]
    finally:
        app.channel.close()
    assert through == ["ListSessions", "RevokePrincipal", "Status", "Configure"]
    assert "UNSAFE: server.unsafe_skip_authorization" in cluster.log_path("n1").read_text()


def test_certs_rotate_on_a_running_cluster_refuses_the_old_app_certificate_and_accepts_the_new(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    leader = cluster.wait_for_leader()
    kept = TLSFiles(ca=cluster.tls_files.ca, cert=tmp_path / "old.pem", key=tmp_path / "old.key")
    kept.cert.write_bytes(cluster.tls_files.cert.read_bytes())
    kept.key.write_bytes(cluster.tls_files.key.read_bytes())
    old = Api(cluster, leader, kept)
    try:
        old.create(b"before-rotation", "dave")  # the old certificate works until it is revoked
        assert main(["certs", "rotate", "--role", "app", "--data-dir", str(cluster.data_dir)]) == 0

        def refused() -> str | None:
            try:
                old.create(os.urandom(8), "dave")
            except grpc.RpcError as exc:
                return exc.details() if exc.code() == DENIED else None
            return None

        why = cluster.wait_until(refused, 10.0, "the old app certificate to be refused")
        assert "is revoked" in why
    finally:
        old.channel.close()
    new = Api(cluster, leader, cluster.tls_files)
    try:
        assert new.create(b"after-rotation", "dave").session.principal == "dave"
    finally:
        new.channel.close()
    for node_id in cluster.node_ids:  # every node loaded the list, not only the one asked
        assert "revocation list" in cluster.log_path(node_id).read_text(), node_id
    assert cluster.status(leader, digest=True) is not None  # the admin certificate is untouched

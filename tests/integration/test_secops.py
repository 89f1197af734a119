"""Session-security operations (command level 5) on real nodes.

A rotated-away token serves within its grace on the leader and on a follower; after the
grace it is refused, the reuse is recorded through the log (a follower's report is forwarded
to the leader) and, with revoke_on_reuse, the session it was rotated into ends on every node.
A deleted session's token hash cannot name a new session; a disabled principal gets none.
"""

from __future__ import annotations

import hashlib
import json
import time

import grpc
import pytest

from sessionquorum.client import InvalidArgument, NotFound, PermissionDenied, SessionClient, TLSConfig
from sessionquorum.cluster import LocalCluster
from sessionquorum.cluster._cli import main as cli_main

from .conftest import ClientFactory, ClusterFactory
from .helpers import CONVERGE_TIMEOUT_S, leader_stub, local_read, pb, wait_converged
from .test_metrics import scrape

pytestmark = pytest.mark.cluster

GRACE_MS = 3_000


def wait_security_ops(cluster: LocalCluster) -> None:
    """The leader switches level 5 on once every member advertised it (duties.py)."""

    def on_everywhere() -> bool:
        statuses = [cluster.status(n) for n in cluster.node_ids]
        return all(s is not None and s.security_ops for s in statuses)

    cluster.wait_until(on_everywhere, CONVERGE_TIMEOUT_S, "security ops on every node")


def node_client(cluster: LocalCluster, node_id: str) -> SessionClient:
    tls = cluster.tls_files
    return SessionClient(
        [cluster.grpc_address(node_id)],
        tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key),
        read_from="any",
        timeout_s=10.0,
    )


def test_a_rotated_token_serves_within_grace_and_its_reuse_after_revokes_the_session_everywhere(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3, overrides={"limits": {"rotation_grace_ms": GRACE_MS, "revoke_on_reuse": "on"}})
    wait_security_ops(cluster)
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    client = make_client(cluster)
    created = client.create(principal="alice", attributes={"cart": b"2"})
    rotated = client.rotate(created.token, grace=True)
    grace_ends_ms = rotated.session.last_access_ms + GRACE_MS
    with node_client(cluster, leader) as on_leader, node_client(cluster, follower) as on_follower:
        # In-flight requests with the old token, on the leader and on a follower.
        assert on_leader.validate(created.token).attributes == {"cart": b"2"}
        assert on_follower.validate(created.token).handle == created.session.handle
        assert time.time() * 1000 < grace_ends_ms, "the grace passed before the reads: raise GRACE_MS"
        cluster.wait_until(lambda: time.time() * 1000 >= grace_ends_ms + 50, 10.0, "the grace to pass")
        # After it: a reuse, refused like any unknown token, reported from the follower.
        with pytest.raises(NotFound):
            on_follower.validate(created.token)
    with pytest.raises(InvalidArgument, match="grace is for a routine rotation"):
        client.rotate(rotated.token, principal="alice", grace=True)  # a login gets no grace
    wait_converged(cluster)
    # revoke_on_reuse: the session the old token was rotated into is gone on every node.
    cluster.wait_until(
        lambda: all(local_read(cluster, n, rotated.token) is None for n in cluster.node_ids),
        CONVERGE_TIMEOUT_S,
        "the rotated session to end on every node",
    )
    # Counted on every node (applied there), once.
    for n in cluster.node_ids:
        samples = scrape(cluster, n)
        assert samples[("sessionquorum_token_reuse_detected_total", ())] == 1, n
        assert samples[("sessionquorum_sessions_ended_total", (("reason", "reuse"),))] == 1, n
    logs = "".join(cluster.log_path(n).read_text(errors="replace") for n in cluster.node_ids)
    assert logs.count("was used after its grace") == 1
    assert created.session.handle in logs.split("was used after its grace")[1].splitlines()[0]


def test_a_deleted_sessions_token_hash_is_refused_and_a_disabled_principal_gets_no_session(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    wait_security_ops(cluster)
    api, _ = leader_stub(cluster)
    token_hash = hashlib.sha256(b"a raw caller's token").digest()

    def create(sequence: int, principal: str = "") -> pb.CreateResponse:
        return api.Create(  # type: ignore[no-any-return]
            pb.CreateRequest(
                request_id=pb.RequestId(client_id=b"raw-caller", sequence=sequence),
                token_hash=token_hash,
                principal=principal,
                idle_timeout_ms=60_000,
                absolute_timeout_ms=3_600_000,
            ),
            timeout=10,
        )

    create(1)
    deleted = api.Delete(
        pb.DeleteRequest(request_id=pb.RequestId(client_id=b"raw-caller", sequence=2), token_hash=token_hash),
        timeout=10,
    )
    assert deleted.existed
    with pytest.raises(grpc.RpcError) as refused:
        create(3)
    assert refused.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "ended" in (refused.value.details() or "")

    client = make_client(cluster)
    admin = make_client(cluster, admin=True)
    bob = client.create(principal="bob")
    with pytest.raises(PermissionDenied, match="admin"):
        client.disable_principal("bob")  # an application's certificate may not (store/authz.py)
    ended = admin.disable_principal("bob")
    assert ended == [bob.session.handle]
    with pytest.raises(PermissionDenied, match="disabled"):
        client.create(principal="bob")
    wait_converged(cluster)
    assert all(local_read(cluster, n, bob.token) is None for n in cluster.node_ids)
    statuses = [cluster.status(n) for n in cluster.node_ids]
    assert all(s is not None and s.disabled_principals == 1 and s.tombstones == 2 for s in statuses)
    # The admin CLI enables it again (and disables it, idempotently, as JSON).
    root = ["--data-dir", str(cluster.data_dir), "--json"]
    assert cli_main(["principals", "enable", "bob", *root]) == 0
    assert client.create(principal="bob").session.principal == "bob"
    assert cli_main(["principals", "disable", "bob", *root]) == 0
    with pytest.raises(PermissionDenied):
        client.create(principal="bob")
    limits = json.loads(client_status_limits(cluster))
    assert limits["revoke_on_reuse"] == "off"


def client_status_limits(cluster: LocalCluster) -> str:
    status = cluster.status(cluster.wait_for_leader())
    assert status is not None
    return status.limits_json

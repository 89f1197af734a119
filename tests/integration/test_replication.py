"""A session written through one client is read through another that knows one follower."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import ClientFactory, ClusterFactory
from .helpers import local_read, wait_converged

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("nodes", [3, 5])
def test_session_written_via_client_is_validated_via_follower_only_client(
    make_cluster: ClusterFactory, make_client: ClientFactory, nodes: int
) -> None:
    cluster = make_cluster(nodes)
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    writer = make_client(cluster)
    reader = make_client(cluster, [cluster.grpc_address(follower)])

    created = writer.create(principal="alice", attributes={"cart": b"3 items"})
    seen = reader.validate(created.token)

    assert seen.handle == created.session.handle
    assert seen.principal == "alice"
    assert dict(seen.attributes) == {"cart": b"3 items"}
    wait_converged(cluster)
    for node in cluster.node_ids:
        local = local_read(cluster, node, created.token)
        assert local is not None and local.handle == created.session.handle


def test_full_session_lifecycle_through_the_cluster(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    client = make_client(cluster)

    anon = client.create(attributes={"theme": b"dark"})
    s = client.update(anon.token, set={"cart": b"1"}, delete=["theme"], expected_version=1)
    assert s.version == 2
    login = client.rotate(anon.token, principal="bob")
    assert login.token != anon.token and login.session.handle == anon.session.handle
    assert dict(client.validate(login.token, touch=True).attributes) == {"cart": b"1"}
    other = client.create(principal="bob")
    # An app certificate acts for bob with one of bob's live sessions (store/authz.py).
    listed = client.list_sessions("bob", token=other.token)
    assert [x.handle for x in listed] == [anon.session.handle, other.session.handle]
    revoked = client.revoke_principal("bob", except_handle=other.session.handle, token=other.token)
    assert revoked == [anon.session.handle]
    assert client.delete(other.token) is True
    assert client.delete(other.token) is False
    assert make_client(cluster, admin=True).list_sessions("bob") == []  # no session of bob's left to vouch
    wait_converged(cluster)


def test_concurrent_increments_through_the_cluster_lose_none(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    client = make_client(cluster)
    token = client.create().token

    def bump(_: int) -> None:
        for _ in range(25):
            client.update(token, increment={"hits": 1})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(bump, range(8)))
    assert client.validate(token).attributes["hits"] == b"200"

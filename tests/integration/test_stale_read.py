"""A paused old leader must never answer a linearizable read from stale state.

pysyncobj's own reads are local and were measured stale on a resumed or isolated leader;
the read barrier through the log is what prevents it here.
"""

from __future__ import annotations

import grpc
import pytest

from sessionquorum.client import NotFound, hash_token

from .conftest import ClientFactory, ClusterFactory
from .helpers import pb, stub

pytestmark = pytest.mark.cluster


def test_resumed_old_leader_never_serves_a_session_deleted_by_the_new_leader(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    writer = make_client(cluster)
    created = writer.create(principal="carol")
    old = cluster.wait_for_leader()
    raw_old, channel = stub(cluster, old)
    raw_old.Status(pb.StatusRequest())  # connect now, so the call after SIGCONT goes out at once

    cluster.pause(old)
    try:
        new = cluster.wait_for_new_leader(old)
        others = [cluster.grpc_address(n) for n in cluster.node_ids if n != old]
        assert make_client(cluster, others).delete(created.token) is True
    finally:
        cluster.resume(old)

    # At once, through the old leader's address only: raw, then through the client.
    try:
        answer = raw_old.Validate(pb.ValidateRequest(token_hash=hash_token(created.token)), timeout=15.0)
    except grpc.RpcError as exc:
        assert exc.code() != grpc.StatusCode.OK
    else:
        pytest.fail(f"old leader {old} served a deleted session (new leader {new}): {answer}")
    with pytest.raises(NotFound):
        make_client(cluster, [cluster.grpc_address(old)]).validate(created.token)
    channel.close()

"""Checks shared by the cluster tests: convergence, per-node reads, raw stubs."""

from __future__ import annotations

import grpc

from sessionquorum.client import NotFound, Session, SessionClient, TLSConfig
from sessionquorum.cluster import LocalCluster
from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

CONVERGE_TIMEOUT_S = 60.0


def wait_converged(cluster: LocalCluster, node_ids: tuple[str, ...] | None = None) -> str:
    """Wait until the given nodes (default: all) applied the same log; return the digest."""
    ids = node_ids or cluster.node_ids
    return cluster.wait_until(
        lambda: cluster.converged(ids), CONVERGE_TIMEOUT_S, f"nodes {', '.join(ids)} to converge"
    )


def local_read(cluster: LocalCluster, node_id: str, token: str) -> Session | None:
    """Read a session from one node's own state (STALE consistency): None if absent."""
    tls = cluster.tls_files
    with SessionClient(
        [cluster.grpc_address(node_id)], tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key), timeout_s=10.0
    ) as client:
        try:
            return client.validate(token, stale=True)
        except NotFound:
            return None


def stub(cluster: LocalCluster, node_id: str) -> tuple[pb_grpc.SessionStoreStub, grpc.Channel]:
    channel = cluster.channel(node_id)
    return pb_grpc.SessionStoreStub(channel), channel


def leader_stub(cluster: LocalCluster) -> tuple[pb_grpc.SessionStoreStub, grpc.Channel]:
    return stub(cluster, cluster.wait_for_leader())


def session_count(cluster: LocalCluster, node_id: str) -> int:
    status = cluster.status(node_id)
    assert status is not None
    return status.session_count


__all__ = ["CONVERGE_TIMEOUT_S", "leader_stub", "local_read", "pb", "session_count", "stub", "wait_converged"]

"""Checks shared by the cluster tests: convergence, per-node reads, raw stubs."""

from __future__ import annotations

import re

import grpc

from sessionquorum.client import NotFound, Session, SessionClient, TLSConfig
from sessionquorum.cluster import LocalCluster
from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

CONVERGE_TIMEOUT_S = 60.0


def wait_converged(cluster: LocalCluster, node_ids: tuple[str, ...] | None = None) -> str:
    """Wait until the given nodes (default: all) applied the same log and serve; return the digest.

    Serving too: a restarted node applies the log a moment (one readiness poll) before it reports
    SERVING and answers STALE reads, and a test that reads from it next must not see that gap.
    """
    ids = node_ids or cluster.node_ids

    def settled() -> str | None:
        digest = cluster.converged(ids)
        if digest is None:
            return None
        statuses = cluster.statuses()
        return digest if all((s := statuses.get(n)) is not None and s.ready for n in ids) else None

    return cluster.wait_until(settled, CONVERGE_TIMEOUT_S, f"nodes {', '.join(ids)} to converge and serve")


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


_FIX_COUNTS = re.compile(r"raft fix counts(?: at stop)?: (.*)$")
_LAUNCH = " launcher: starting "


def raft_fix_counts(cluster: LocalCluster, node_id: str) -> dict[str, int]:
    """How often store/raft.py's fixes acted on a node, summed over its processes (restarts).

    Each process logs its totals at most every few seconds and at a clean stop; the last
    line of each process counts, so a killed process reports what it had logged by then.
    """
    totals: dict[str, int] = {}
    last: dict[str, int] = {}
    for line in cluster.log_path(node_id).read_text(errors="replace").splitlines():
        if _LAUNCH in line:
            for key, value in last.items():
                totals[key] = totals.get(key, 0) + value
            last = {}
        elif match := _FIX_COUNTS.search(line):
            last = {k: int(v) for k, v in (pair.split("=") for pair in match.group(1).split())}
    for key, value in last.items():
        totals[key] = totals.get(key, 0) + value
    return totals


def session_count(cluster: LocalCluster, node_id: str) -> int:
    status = cluster.status(node_id)
    assert status is not None
    return status.session_count


__all__ = [
    "CONVERGE_TIMEOUT_S",
    "leader_stub",
    "local_read",
    "pb",
    "raft_fix_counts",
    "session_count",
    "stub",
    "wait_converged",
]

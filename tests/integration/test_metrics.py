"""Every node's /metrics on a real cluster, health under a lost quorum, and the JSON log.

The ports come from cluster.json (`nodes[i].metrics`, chosen free by the launcher).
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from sessionquorum.client import hash_token
from sessionquorum.cluster import LocalCluster
from sessionquorum.store.node import SERVICE_NAME

from .conftest import ClientFactory, ClusterFactory
from .helpers import wait_converged

pytestmark = pytest.mark.cluster

HEALTH_TIMEOUT_S = 30.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(cluster: LocalCluster, node_id: str) -> Samples:
    address = cluster.config.node(node_id).metrics_address
    assert address is not None, "the launcher gives every local node a metrics address"
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def requests(samples: Samples, method: str, code: str = "OK") -> float:
    return samples.get(("sessionquorum_requests_total", (("code", code), ("method", method))), 0.0)


def health(stub: health_pb2_grpc.HealthStub) -> int:
    return int(stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5).status)


def test_metrics_count_client_calls_and_raft_gauges_agree_with_status(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3, overrides={"server": {"log_format": "json"}})
    leader = cluster.wait_for_leader()
    before = {n: scrape(cluster, n) for n in cluster.node_ids}
    client = make_client(cluster, read_from="any")
    tokens = [client.create(principal="alice").token for _ in range(20)]
    for token in tokens:
        client.validate(token)
    client.delete(tokens[0])
    wait_converged(cluster)
    after = {n: scrape(cluster, n) for n in cluster.node_ids}

    # Writes go to the leader; linearizable reads to any node.
    assert requests(after[leader], "Create") - requests(before[leader], "Create") == 20
    assert requests(after[leader], "Delete") - requests(before[leader], "Delete") == 1
    assert (
        sum(requests(after[n], "Validate") - requests(before[n], "Validate") for n in cluster.node_ids) == 20
    )
    count = ("sessionquorum_request_duration_seconds_count", (("code", "OK"), ("method", "Create")))
    assert after[leader][count] - before[leader].get(count, 0.0) == 20
    assert after[leader][("sessionquorum_raft_proposal_duration_seconds_count", ())] >= 21

    for node_id in cluster.node_ids:
        status = cluster.status(node_id)
        got = scrape(cluster, node_id)
        assert status is not None
        assert got[("sessionquorum_raft_term", ())] == status.term
        assert got[("sessionquorum_raft_is_leader", ())] == int(status.is_leader)
        # An idle cluster: at most a sweep's entry may land between the Status call and the scrape.
        assert 0 <= got[("sessionquorum_raft_applied_index", ())] - status.last_applied <= 1
        assert 0 <= got[("sessionquorum_raft_commit_index", ())] - status.commit_index <= 1
        assert got[("sessionquorum_sessions_live", ())] == status.session_count == 19
        assert got[("sessionquorum_journal_bytes", ())] == status.journal_bytes
        assert got[("sessionquorum_snapshots_taken_total", ())] == status.snapshots_taken
        # Applied on every node, counted on every node.
        assert got[("sessionquorum_sessions_created_total", ())] == 20
        assert got[("sessionquorum_sessions_ended_total", (("reason", "deleted"),))] == 1
        assert got[("sessionquorum_raft_leader_changes_total", ())] >= 1
        assert got[("sessionquorum_serving", ())] == 1

    # The JSON log: every logged line one object with the node and its term; the leader
    # change is there; no token nor token hash anywhere.
    secrets = set(tokens) | {hash_token(t).hex() for t in tokens}
    for node_id in cluster.node_ids:
        text = cluster.log_path(node_id).read_text(encoding="utf-8", errors="replace")
        assert not any(secret in text for secret in secrets)
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert records and all(r["node"] == node_id for r in records)
        changes = [r for r in records if r["msg"].startswith("leader of term ")]
        assert changes and all(isinstance(r["term"], int) for r in changes)


def test_a_node_cut_off_from_the_majority_goes_not_serving_and_back_after_resume(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    lone = next(n for n in cluster.node_ids if n != leader)
    majority = [n for n in cluster.node_ids if n != lone]
    serving = health_pb2.HealthCheckResponse.SERVING
    with cluster.channel(lone) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        cluster.wait_until(lambda: health(stub) == serving, HEALTH_TIMEOUT_S, f"{lone} SERVING")
        for node_id in majority:
            cluster.pause(node_id)
        try:
            cluster.wait_until(
                lambda: health(stub) == health_pb2.HealthCheckResponse.NOT_SERVING,
                HEALTH_TIMEOUT_S,
                f"{lone} NOT_SERVING without a majority",
            )
            assert scrape(cluster, lone)[("sessionquorum_serving", ())] == 0
        finally:
            for node_id in majority:
                cluster.resume(node_id)
        cluster.wait_until(lambda: health(stub) == serving, HEALTH_TIMEOUT_S, f"{lone} SERVING again")
    assert scrape(cluster, lone)[("sessionquorum_serving", ())] == 1

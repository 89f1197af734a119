"""Kill -9 while clients write: writes resume, nothing acknowledged is lost or applied twice."""

from __future__ import annotations

import pytest

from sessionquorum.cluster import LocalCluster

from .conftest import ClientFactory, ClusterFactory
from .helpers import wait_converged
from .workload import Ledger, Workload, verify_on_every_node

pytestmark = pytest.mark.cluster

PROGRESS_TIMEOUT_S = 30.0
MIN_ACKS_BETWEEN_STEPS = 200


def wait_for_progress(cluster: LocalCluster, ledger: Ledger, what: str) -> None:
    start = ledger.acked
    cluster.wait_until(lambda: ledger.acked >= start + MIN_ACKS_BETWEEN_STEPS, PROGRESS_TIMEOUT_S, what)


def wait_for_new_leader(cluster: LocalCluster, old: str) -> str:
    return cluster.wait_for_new_leader(old, PROGRESS_TIMEOUT_S)


def test_kill_leader_during_writes_loses_no_acknowledged_write(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    with Workload(make_client(cluster, timeout_s=20.0), threads=4) as load:
        wait_for_progress(cluster, load.ledger, "writes before the kill")
        old = cluster.wait_for_leader()
        cluster.kill(old)
        wait_for_new_leader(cluster, old)
        wait_for_progress(cluster, load.ledger, "writes to resume after the leader's kill")
    cluster.restart(old)
    wait_converged(cluster)
    verify_on_every_node(cluster, load.ledger)
    assert not load.ledger.errors, load.ledger.errors


def test_kill_minority_of_five_during_writes_loses_nothing(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(5)
    with Workload(make_client(cluster, timeout_s=20.0), threads=4) as load:
        wait_for_progress(cluster, load.ledger, "writes before the kills")
        leader = cluster.wait_for_leader()
        victims = [leader, next(n for n in cluster.node_ids if n != leader)]
        for node in victims:
            cluster.kill(node)
        wait_for_progress(cluster, load.ledger, "writes with two of five nodes dead")
    survivors = tuple(n for n in cluster.node_ids if n not in victims)
    wait_converged(cluster, survivors)
    for node in victims:
        cluster.restart(node)
    wait_converged(cluster)
    verify_on_every_node(cluster, load.ledger)
    assert not load.ledger.errors, load.ledger.errors


def test_kill_all_nodes_and_restart_from_data_dirs_loses_nothing(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    # A short client deadline: the writers give up (unknown outcome) soon after the kill.
    with Workload(make_client(cluster, timeout_s=3.0), threads=4) as load:
        wait_for_progress(cluster, load.ledger, "writes before killing every node")
        for node in cluster.node_ids:
            cluster.kill(node)
    for node in cluster.node_ids:
        cluster.restart(node)
    cluster.wait_for_leader()
    wait_converged(cluster)
    verify_on_every_node(cluster, load.ledger)
    # Writes killed mid-flight end as unknown outcomes, never as errors.
    assert not load.ledger.errors, load.ledger.errors

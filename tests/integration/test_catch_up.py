"""A follower that was down while the others took many writes catches up and converges,
without deposing the leader (found by chaos scenario follower-catchup-100k).

The hazard: pysyncobj checks a follower's election deadline before reading the messages that
arrived meanwhile, so a follower whose start-up (loading a long journal) or tick (replaying
it) ran longer than an election timeout campaigned against a healthy leader. store/raft.py
renews the deadline then, and counts each renewal of a deadline that had already passed
(`election_deadlines_renewed`: each one an election the follower would have started).

The slow test proves the regression: with 20,000 entries the follower's restart takes
seconds, it asserts that the renewal happened in the run (so it cannot pass on a machine
where the fault never occurs) and that the leader's term did not move. The fast test only
covers catching up and converging after a shorter outage; it does not claim the regression,
because a short journal loads within an election timeout and the fault does not occur.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sessionquorum.client import SessionClient
from sessionquorum.cluster import LocalCluster

from .conftest import ClientFactory, ClusterFactory
from .helpers import local_read, raft_fix_counts, session_count, wait_converged

pytestmark = pytest.mark.cluster

THREADS = 32


def _write_while_down(
    cluster: LocalCluster, client: SessionClient, follower: str, writes: int
) -> tuple[list[str], float]:
    cluster.kill(follower)
    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        tokens = list(
            pool.map(lambda i: client.create(attributes={"i": str(i).encode()}).token, range(writes))
        )
    return tokens, time.monotonic() - started


def _term(cluster: LocalCluster, node_id: str) -> int:
    status = cluster.status(node_id)
    assert status is not None, f"node {node_id} did not answer Status"
    return status.term


def _assert_holds(cluster: LocalCluster, follower: str, tokens: list[str]) -> None:
    assert session_count(cluster, follower) == len(tokens)
    for token in (tokens[0], tokens[len(tokens) // 2], tokens[-1]):
        assert local_read(cluster, follower, token) is not None


def test_follower_restarted_after_2000_writes_catches_up_and_converges(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    tokens, _ = _write_while_down(cluster, make_client(cluster, timeout_s=30.0), follower, 2_000)

    cluster.restart(follower)
    wait_converged(cluster)
    _assert_holds(cluster, follower, tokens)


@pytest.mark.slow
def test_follower_restarted_after_20000_writes_renews_its_passed_deadline_and_never_deposes_the_leader(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    writes = 20_000
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    tokens, write_s = _write_while_down(cluster, make_client(cluster, timeout_s=30.0), follower, writes)

    term_before = _term(cluster, leader)
    cluster.restart(follower)
    wait_converged(cluster)
    _assert_holds(cluster, follower, tokens)
    assert _term(cluster, leader) == term_before
    # Replaying its now long journal after another restart (long start-up, long ticks).
    cluster.restart(follower)
    wait_converged(cluster)
    assert _term(cluster, leader) == term_before
    _assert_holds(cluster, follower, tokens)
    # The fault happened: without the renewals the follower would have campaigned.
    renewed = cluster.wait_until(
        lambda: raft_fix_counts(cluster, follower).get("election_deadlines_renewed", 0),
        10.0,
        f"{follower} to log a renewed election deadline",
    )
    print(f"{writes} creates in {write_s:.1f} s ({writes / write_s:.0f}/s); {renewed} deadline(s) renewed")

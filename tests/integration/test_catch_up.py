"""A follower that was down while the others took 20,000 writes catches up and converges,
without deposing the leader (found by chaos scenario follower-catchup-100k)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import ClientFactory, ClusterFactory
from .helpers import local_read, session_count, wait_converged

pytestmark = pytest.mark.cluster

WRITES = 20_000
THREADS = 32


def test_follower_restarted_after_20000_writes_catches_up_and_converges(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    cluster.kill(follower)
    client = make_client(cluster, timeout_s=30.0)

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        tokens = list(
            pool.map(lambda i: client.create(attributes={"i": str(i).encode()}).token, range(WRITES))
        )
    write_s = time.monotonic() - started

    term_before = cluster.status(leader).term  # type: ignore[union-attr]
    cluster.restart(follower)
    wait_converged(cluster)
    assert session_count(cluster, follower) == WRITES
    # Catching up must not make the follower campaign and depose the leader; nor must
    # replaying its now long journal after another restart (one long pysyncobj tick).
    assert cluster.status(leader).term == term_before  # type: ignore[union-attr]
    cluster.restart(follower)
    wait_converged(cluster)
    assert cluster.status(leader).term == term_before  # type: ignore[union-attr]
    for token in (tokens[0], tokens[WRITES // 2], tokens[-1]):
        assert local_read(cluster, follower, token) is not None
    print(f"{WRITES} creates in {write_s:.1f} s ({WRITES / write_s:.0f}/s); follower converged")

"""Counters created with a sealed value, incremented concurrently on real nodes: none is lost.

`create(attributes={"hits": b"0"})` seals "0"; the first increment converts it to a
plaintext counter in one guarded command (store/sealing.py). Many incrementers racing on
that first increment is the hazard: two conversions planned on the same version must not
both count from "0". The leader logs each lost race it planned again; the test counts them.
"""

from __future__ import annotations

import threading

import pytest

from sessionquorum.client import SessionQuorumError
from sessionquorum.store.service import REPLANNED

from .conftest import ClientFactory, ClusterFactory
from .helpers import wait_converged

pytestmark = pytest.mark.cluster

COUNTERS = 4
THREADS = 8
INCREMENTS_PER_THREAD = 6
START_TIMEOUT_S = 30.0


def test_concurrent_increments_of_sealed_initial_counters_all_count_exactly_once(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    clients = [make_client(cluster) for _ in range(2)]
    tokens = [clients[0].create(attributes={"hits": b"0", "note": b"sealed"}).token for _ in range(COUNTERS)]
    acknowledged = [0] * COUNTERS
    problems: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def work(index: int) -> None:
        client = clients[index % 2]
        start.wait(START_TIMEOUT_S)  # every thread's first increment races on a sealed value
        for _ in range(INCREMENTS_PER_THREAD):
            for i, token in enumerate(tokens):
                try:
                    client.update(token, increment={"hits": 1})
                except SessionQuorumError as exc:  # a healthy cluster answers every call
                    with lock:
                        problems.append(repr(exc))
                    continue
                with lock:
                    acknowledged[i] += 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert problems == []
    assert acknowledged == [THREADS * INCREMENTS_PER_THREAD] * COUNTERS
    for i, token in enumerate(tokens):
        got = clients[1].validate(token).attributes
        assert int(got["hits"]) == acknowledged[i]  # every acknowledged increment, exactly once
        assert got["note"] == b"sealed"  # the other sealed value is untouched
    replanned = sum(
        cluster.log_path(n).read_text(errors="replace").count(REPLANNED) for n in cluster.node_ids
    )
    assert replanned >= 1  # the race happened (and was planned again), not just sequential increments
    wait_converged(cluster)


def test_increment_of_a_sealed_value_that_is_not_an_integer_is_refused_and_leaves_it(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    client = make_client(cluster)
    token = client.create(attributes={"hits": b"lots"}).token
    with pytest.raises(SessionQuorumError, match="not a canonical decimal integer") as refused:
        client.update(token, increment={"hits": 1})
    assert "lots" not in str(refused.value)
    session = client.validate(token)
    assert session.attributes["hits"] == b"lots" and session.version == 1

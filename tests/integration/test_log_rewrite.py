"""Pipelined appends must never make a follower truncate entries it already has.

Found by bench/bench_ops.py at 64 threads: pysyncobj 0.3.17's leader rewinds a follower's
next index on a late acknowledgement, and its follower deletes everything after
prevLogIdx before appending, matching entries included. For a moment the follower holds
fewer entries than it acknowledged: a leader crash then could lose a committed write.
store/raft.py keeps Raft's rule (truncate only on conflict) and never rewinds next index.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sessionquorum.client import OutcomeUnknown

from .conftest import ClientFactory, ClusterFactory
from .helpers import wait_converged

pytestmark = pytest.mark.cluster

THREADS = 64
LOAD_S = 10.0
# Large values fill pysyncobj's 64 KiB append batches, so the leader pipelines several
# batches per period: that is when late acknowledgements arrive.
VALUE = b"v" * 4096
SIGNATURES = ("truncating already-applied", "state machine may have diverged")


def test_pipelined_writes_never_truncate_applied_entries_on_followers(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    client = make_client(cluster, timeout_s=20.0)
    end = time.monotonic() + LOAD_S

    def writer(i: int) -> int:
        token = client.create().token
        done = 0
        while time.monotonic() < end:
            try:
                client.update(token, set={"v": VALUE, "i": str(done).encode()})
            except OutcomeUnknown:
                continue
            done += 1
        return done

    with ThreadPoolExecutor(THREADS) as pool:
        total = sum(pool.map(writer, range(THREADS)))
    assert total > 0
    wait_converged(cluster)
    tails = cluster.log_tails(lines=100_000)
    bad = {n: [ln for ln in t.splitlines() if any(s in ln for s in SIGNATURES)] for n, t in tails.items()}
    assert not any(bad.values()), {n: lines[:3] for n, lines in bad.items() if lines}

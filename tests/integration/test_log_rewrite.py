"""Pipelined appends must never make a follower truncate entries it already has.

Found by bench/bench_ops.py at 64 threads: pysyncobj 0.3.17's leader rewinds a follower's
next index on a late acknowledgement, and its follower deletes everything after
prevLogIdx before appending, matching entries included. For a moment the follower holds
fewer entries than it acknowledged: a leader crash then could lose a committed write.
store/raft.py keeps Raft's rule (truncate only on conflict) and never rewinds next index.

What this test shows, from the counts each node logs (store/raft.py, "raft fix counts"):
- the hazard happened in this run: acknowledgements of pipelined batches arrived late and
  the leader was told to rewind a follower's next index (`next_index_rewinds_refused` > 0
  on the leader; on plain pysyncobj each one resends entries the follower then truncates),
  so the test cannot pass on a machine where the load never provokes the fault;
- no node truncated any entry (`entries_truncated` == 0), applied or only acknowledged:
  the run has one leader in one term, so Raft allows no truncation at all.
pysyncobj's CRITICAL "truncating already-applied" line, also checked, covers only entries
already applied; a truncation of acknowledged but not yet applied entries (the case that can
lose a committed write) never logs it, which is why the count above is the real check.
What it does not cover: truncations after a leader change (a conflict makes them legal);
the follower-side rewrite (`keep_matching_entries`, whose count is printed but is usually 0
here because the leader no longer resends; tests/unit/test_raft_log_matching.py covers it);
and chunked transmissions of entries over 64 KiB, which bypass the rewrite.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sessionquorum.client import OutcomeUnknown

from .conftest import ClientFactory, ClusterFactory
from .helpers import raft_fix_counts, wait_converged

pytestmark = pytest.mark.cluster

THREADS = 64
LOAD_S = 6.0
# Values near the 16 KiB attribute limit fill pysyncobj's 64 KiB append batches, so the
# leader sends several batches per period: that is when late acknowledgements arrive
# (measured on 2 busy cores: 4 KiB values gave none in 10 s, 15 KB ones ~1,700 rewinds).
VALUE = b"v" * 15_000
SIGNATURES = ("truncating already-applied", "state machine may have diverged")


def test_pipelined_writes_with_late_acknowledgements_never_truncate_follower_entries(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    term = cluster.status(leader).term  # type: ignore[union-attr]
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
    statuses = cluster.statuses()
    assert all(s is not None and s.term == term for s in statuses.values()), "a leader change happened"
    # Each node logs its final counts at a clean stop.
    assert cluster.stop() == dict.fromkeys(cluster.node_ids, 0)

    counts = {n: raft_fix_counts(cluster, n) for n in cluster.node_ids}
    assert counts[leader].get("next_index_rewinds_refused", 0) > 0, (total, counts)
    assert all(c.get("entries_truncated", -1) == 0 for c in counts.values()), counts
    logs = {n: cluster.log_path(n).read_text(errors="replace") for n in cluster.node_ids}
    bad = {n: [ln for ln in t.splitlines() if any(s in ln for s in SIGNATURES)] for n, t in logs.items()}
    assert not any(bad.values()), {n: lines[:3] for n, lines in bad.items() if lines}
    print(f"{total} updates; fix counts per node: {counts}")

"""Snapshot install to an empty follower, and elections while nodes snapshot under load.

    .venv/bin/python bench/bench_install.py [--sessions 50000] [--compaction-entries 2048]

Starts a real 3-node cluster with a small `raft.compaction_entries` so that every node
snapshots many times while `--sessions` sessions (one 300-byte attribute each) are created
through the client; reports the create rate, each node's snapshots and the leader's term
before and after (a change means an election happened under snapshot load). Then it kills
a follower (-9) and times its restart until it reports ready (SERVING); then kills it again,
empties its data directory, restarts it and reports how long it took to hold the leader's
state (same digest), and what its log says about the install.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sessionquorum.client import SessionClient, TLSConfig
from sessionquorum.cluster import LocalCluster

THREADS = 32
TIMEOUT_S = 600.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50_000)
    parser.add_argument("--compaction-entries", type=int, default=2048)
    parser.add_argument("--keep", action="store_true", help="keep the cluster directory (node logs)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sq-bench-install-"))
    cluster = LocalCluster(tmp / "c", 3, overrides={"raft": {"compaction_entries": args.compaction_entries}})
    try:
        cluster.start()
        leader = cluster.wait_for_leader(60.0)
        term = cluster.status(leader).term  # type: ignore[union-attr]
        tls = TLSConfig.from_files(cluster.tls_files.ca, cluster.tls_files.cert, cluster.tls_files.key)
        value = b"v" * 300
        started = time.monotonic()
        with (
            SessionClient(cluster.endpoints, tls=tls, timeout_s=60.0) as client,
            ThreadPoolExecutor(THREADS) as pool,
        ):
            for _ in pool.map(lambda i: client.create(attributes={"data": value}), range(args.sessions)):
                pass
        create_s = time.monotonic() - started
        statuses = cluster.statuses()
        leader_now = cluster.wait_for_leader(60.0)
        print(f"{args.sessions} creates in {create_s:.1f} s ({args.sessions / create_s:.0f}/s)")
        for node_id, st in statuses.items():
            if st is not None:
                print(
                    f"  {node_id}: snapshots {st.snapshots_taken}, last at {st.snapshot_index}, "
                    f"{st.snapshot_bytes / 1e6:.1f} MB; journal {st.journal_entries} entries"
                )
        print(f"leader {leader} term {term} -> {leader_now} term {cluster.status(leader_now).term}")  # type: ignore[union-attr]

        follower = next(n for n in cluster.node_ids if n != leader_now)
        # Restart-to-SERVING: kill -9, start again from its own snapshot and journal.
        cluster.kill(follower)
        started = time.monotonic()
        cluster.start_node(follower)
        cluster.wait_until(
            lambda: (st := cluster.status(follower)) is not None and st.ready, TIMEOUT_S, "the follower ready"
        )
        took_s = time.monotonic() - started
        print(f"follower {follower} restarted to SERVING in {took_s:.1f} s (kill -9, own data)")
        cluster.kill(follower)
        for path in cluster.node_dir(follower).glob("raft.*"):
            path.unlink()
        started = time.monotonic()
        cluster.start_node(follower)
        cluster.wait_until(lambda: cluster.converged(), TIMEOUT_S, "the emptied follower to converge")
        print(f"empty follower {follower} converged in {time.monotonic() - started:.1f} s (restart included)")
        for line in cluster.log_path(follower).read_text(errors="replace").splitlines():
            if "snapshot" in line:
                print("  " + line)
        print(f"leader term at the end: {cluster.status(cluster.wait_for_leader(60.0)).term}")  # type: ignore[union-attr]
    finally:
        cluster.stop()
        cluster.close_channels()
        if args.keep:
            print(f"cluster directory kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

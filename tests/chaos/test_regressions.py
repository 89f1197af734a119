"""Regression tests named after the chaos scenario that found each bug."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from sessionquorum.client import SessionClient, SessionQuorumError, TLSConfig
from sessionquorum.cluster import ClusterTimeout
from tests.chaos.framework._netns import netns_cluster, netns_unavailable_reason

pytestmark = pytest.mark.cluster

WRITERS = 4


def test_partition_isolate_leader_healed_old_leader_with_uncommitted_tail_catches_up(tmp_path: Path) -> None:
    """Found by partition-isolate-leader: the isolated leader accepted writes it could not
    commit; after the heal, pysyncobj's rejections and a pipelining leader livelocked and the
    old leader never caught up (store/raft.py, keep_matching_entries, point 2)."""
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with netns_cluster(tmp_path, 3) as (cluster, net):
        cluster.start()
        old = cluster.wait_for_leader(30.0)
        tls = cluster.tls_files
        stop = threading.Event()

        def write() -> None:
            with SessionClient(
                list(cluster.endpoints), tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key), timeout_s=5.0
            ) as client:
                end = time.monotonic() + 60.0
                while not stop.is_set() and time.monotonic() < end:
                    with contextlib.suppress(SessionQuorumError):
                        client.create()

        writers = [threading.Thread(target=write) for _ in range(WRITERS)]
        for w in writers:
            w.start()
        try:
            cluster.wait_until(
                lambda: (s := cluster.status(old)) is not None and s.commit_index > 50, 30.0, "writes"
            )
            net.isolate(old)
            new = cluster.wait_for_new_leader(old)
            # Let writes land on the new leader while the old one is cut off: more than one
            # 64 KiB append batch, so the leader pipelines batches to it after the heal.
            base = cluster.status(new).commit_index  # type: ignore[union-attr]
            cluster.wait_until(
                lambda: (s := cluster.status(new)) is not None and s.commit_index > base + 1000,
                30.0,
                "writes",
            )
            net.heal()
        finally:
            stop.set()
            for w in writers:
                w.join(30.0)
        try:
            cluster.wait_until(cluster.converged, 30.0, "the healed old leader to catch up")
        except ClusterTimeout as exc:
            pytest.fail(str(exc).splitlines()[0])

"""Snapshots and a bounded journal on real nodes (store/DESIGN.md, "Snapshots and compaction").

- Under a stream of large updates every node's data directory stays within its bound and
  every node compacts (the hazard: a journal that only grows).
- A follower kept down while the others compacted catches up through a snapshot install.
- kill -9 of every node after compaction loses nothing that was acknowledged.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sessionquorum.client import SessionClient
from sessionquorum.cluster import LocalCluster

from .conftest import ClientFactory, ClusterFactory
from .helpers import wait_converged

pytestmark = pytest.mark.cluster

MIB = 1024 * 1024
SMALL = {"journal_max_bytes": 256 * 1024, "compaction_entries": 64}
SESSIONS = 4
THREADS = 8
KEYS = 8


def _data_bytes(node_dir: Path) -> int:
    """What Raft keeps in a node's directory (the journal, meta and snapshot files)."""
    return sum(p.stat().st_size for p in node_dir.glob("raft.*") if p.is_file())


def _snapshot_bytes(node_dir: Path) -> int:
    path = node_dir / "raft.snapshot"
    return path.stat().st_size if path.exists() else 0


def _write_updates(
    client: SessionClient, tokens: list[str], total_bytes: int, value_bytes: int, on_batch: Callable[[], None]
) -> dict[tuple[str, str], bytes]:
    """Update the sessions with `value_bytes` values until `total_bytes` went in; returns the last
    acknowledged value of every (token, key)."""
    count = total_bytes // value_bytes
    acked: dict[tuple[str, str], bytes] = {}

    def one(i: int) -> tuple[str, str, bytes]:
        token, key = tokens[i % len(tokens)], f"k{(i // len(tokens)) % KEYS}"
        value = (f"{i:08d}".encode() * (value_bytes // 8 + 1))[:value_bytes]
        client.update(token, set={key: value})
        return token, key, value

    batch = THREADS * 32
    with ThreadPoolExecutor(THREADS) as pool:
        for start in range(0, count, batch):
            # Within a batch one (token, key) is written by one request only, so the last
            # acknowledged value per key is the one of the highest index.
            for token, key, value in pool.map(one, range(start, min(count, start + batch))):
                acked[(token, key)] = value
            on_batch()
    return acked


def _check_bounded_and_converged(
    cluster: LocalCluster, client: SessionClient, total_bytes: int, value_bytes: int, journal_max: int
) -> dict[str, int]:
    tokens = [client.create(attributes={"n": str(i).encode()}).token for i in range(SESSIONS)]
    worst: dict[str, int] = {n: 0 for n in cluster.node_ids}
    leader = cluster.wait_for_leader()
    term_before = cluster.status(leader).term  # type: ignore[union-attr]

    def sample() -> None:
        for node_id in cluster.node_ids:
            d = cluster.node_dir(node_id)
            used, bound = _data_bytes(d), 2 * journal_max + 2 * _snapshot_bytes(d)
            assert used <= bound, f"{node_id}: {used} bytes in its data dir, bound {bound}"
            worst[node_id] = max(worst[node_id], used)

    acked = _write_updates(client, tokens, total_bytes, value_bytes, sample)
    wait_converged(cluster)
    # Snapshots are taken off the tick thread: no compaction may cost an election.
    assert cluster.status(leader).term == term_before  # type: ignore[union-attr]
    for node_id in cluster.node_ids:
        status = cluster.status(node_id)
        assert status is not None
        # The hazard happened: the journal reached its threshold and was cut, more than once.
        assert status.snapshots_taken >= 2, f"{node_id} took {status.snapshots_taken} snapshots"
        assert status.journal_bytes <= 2 * journal_max
    for (token, key), value in itertools.islice(acked.items(), 0, None, 3):
        assert client.validate(token).attributes[key] == value
    return worst


def test_compaction_small_thresholds_keep_every_data_dir_bounded_and_nodes_converge(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3, overrides={"raft": SMALL})
    client = make_client(cluster, timeout_s=30.0)
    worst = _check_bounded_and_converged(cluster, client, 6 * MIB, 2048, SMALL["journal_max_bytes"])
    print(f"largest raft files per node (bytes): {worst}")


@pytest.mark.slow
def test_compaction_default_settings_100_mb_of_updates_keep_data_dirs_under_64_mib_plus_snapshots(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    client = make_client(cluster, timeout_s=30.0)
    started = time.monotonic()
    worst = _check_bounded_and_converged(cluster, client, 100 * MIB, 6144, 32 * MIB)
    print(f"100 MB of updates in {time.monotonic() - started:.0f} s; largest raft files per node: {worst}")


def test_follower_down_during_several_compactions_catches_up_by_snapshot_install(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3, overrides={"raft": SMALL})
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    client = make_client(cluster, timeout_s=30.0)
    tokens = [client.create(attributes={"n": str(i).encode()}).token for i in range(SESSIONS)]
    cluster.kill(follower)
    log_before = cluster.log_path(follower).read_text(errors="replace").count("installed a snapshot")

    def leader_snapshots() -> int:
        status = cluster.status(leader)
        return status.snapshots_taken if status is not None else 0

    taken_before = leader_snapshots()
    _write_updates(client, tokens, 2 * MIB, 2048, lambda: None)
    assert leader_snapshots() - taken_before >= 3, "the leader did not compact several times"

    cluster.restart(follower)
    digest = wait_converged(cluster)
    installs = cluster.log_path(follower).read_text(errors="replace").count("installed a snapshot")
    assert installs > log_before, "the follower caught up without a snapshot install"
    assert digest


def test_kill_9_of_every_node_after_compaction_loses_no_acknowledged_write(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3, overrides={"raft": SMALL})
    client = make_client(cluster, timeout_s=30.0)
    tokens = [client.create(attributes={"n": str(i).encode()}).token for i in range(SESSIONS)]
    acked = _write_updates(client, tokens, 2 * MIB, 2048, lambda: None)
    # A few more after the last compaction, so both the snapshot and the journal matter.
    for i, token in enumerate(tokens):
        client.update(token, set={"tail": str(i).encode()})
    for node_id in cluster.node_ids:
        status = cluster.status(node_id)
        assert status is not None and status.snapshot_index > 0, f"{node_id} never compacted"
    client.close()
    for node_id in cluster.node_ids:
        cluster.kill(node_id)
    for node_id in cluster.node_ids:
        cluster.start_node(node_id)
    cluster.wait_for_leader(60.0)
    wait_converged(cluster)
    after = make_client(cluster, timeout_s=30.0)
    for i, token in enumerate(tokens):
        session = after.validate(token)
        assert session.attributes["tail"] == str(i).encode()
    for (token, key), value in acked.items():
        assert after.validate(token).attributes[key] == value

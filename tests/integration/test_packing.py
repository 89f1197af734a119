"""Packed log entries on real nodes (store/_packing.py, store/_outbox.py).

Concurrent raw gRPC writers (no Batch RPC, no client coalescing) must share log entries on
the leader, every replica must apply them to the same state, and the entries must survive
what the log goes through: a follower that missed them catches up, and a restarted node
replays them from its own journal. Each test counts the packed entries, so it cannot pass
on a run where nothing was packed.
"""

from __future__ import annotations

import secrets
import threading

import grpc
import pytest

from sessionquorum.cluster import LocalCluster
from sessionquorum.store.commands import MULTI_LEVEL

from .conftest import ClusterFactory
from .helpers import pb, stub, wait_converged

pytestmark = pytest.mark.cluster

WRITERS = 16
WRITES_PER_WRITER = 20


def _write_concurrently(cluster: LocalCluster, node_id: str) -> list[bytes]:
    """WRITERS threads of raw Create RPCs against one node; returns the created token hashes."""
    created: list[bytes] = []
    problems: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(WRITERS)
    raw, channel = stub(cluster, node_id)

    def writer() -> None:
        client_id = secrets.token_bytes(8)
        try:
            start.wait(timeout=30)
            for seq in range(1, WRITES_PER_WRITER + 1):
                token_hash = secrets.token_bytes(32)
                raw.Create(
                    pb.CreateRequest(
                        request_id=pb.RequestId(client_id=client_id, sequence=seq),
                        token_hash=token_hash,
                        attributes=[pb.Attribute(name=b"v", value=b"x" * 300)],
                        idle_timeout_ms=600_000,
                        absolute_timeout_ms=3_600_000,
                    ),
                    timeout=20,
                )
                with lock:
                    created.append(token_hash)
        except BaseException as exc:  # reported below, in the test thread
            problems.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        channel.close()
    assert problems == []
    assert len(created) == WRITERS * WRITES_PER_WRITER
    return created


def _status(cluster: LocalCluster, node_id: str) -> pb.StatusResponse:
    status = cluster.status(node_id)
    assert status is not None
    return status


def test_concurrent_raw_writers_share_packed_entries_that_every_replica_applies_alike(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    cluster.wait_until(
        lambda: _status(cluster, leader).cluster_command_level >= MULTI_LEVEL, 30.0, "every member at level 5"
    )
    lagging = next(n for n in cluster.node_ids if n != leader)

    first = _write_concurrently(cluster, leader)
    digest = wait_converged(cluster)
    proposed = _status(cluster, leader).packed_entries_proposed
    assert proposed > 0, "no entry was packed: this run proves nothing"
    applied = {n: _status(cluster, n).packed_entries_applied for n in cluster.node_ids}
    assert set(applied.values()) == {proposed}, applied  # every node applied each packed entry once
    carried = _status(cluster, leader).packed_commands_applied
    assert proposed * 2 <= carried <= len(first) + 16  # 16: room for the nodes' own proposals

    # A follower that misses packed entries catches up, and a restart replays them.
    cluster.kill(lagging)
    second = _write_concurrently(cluster, leader)
    assert _status(cluster, leader).packed_entries_proposed > proposed
    cluster.restart(lagging)
    new_digest = wait_converged(cluster)
    assert new_digest != digest
    assert _status(cluster, lagging).packed_entries_applied > 0  # its replay and its catch-up

    raw, channel = stub(cluster, lagging)
    try:
        for token_hash in first[:20] + second[-20:]:
            answer = raw.Validate(pb.ValidateRequest(token_hash=token_hash, consistency=pb.STALE), timeout=10)
            assert answer.session.attributes[0].value == b"x" * 300
    except grpc.RpcError as exc:  # pragma: no cover - the assertion message is the point
        pytest.fail(f"a packed create is missing on the restarted node: {exc.details()}")
    finally:
        channel.close()
    assert _status(cluster, lagging).session_count == len(first) + len(second)


def test_a_followers_forwarded_proposals_are_packed_there_and_each_caller_gets_its_own_answer(
    make_cluster: ClusterFactory,
) -> None:
    # Every touching Validate writes (interval 0); on a follower pysyncobj forwards the
    # Touch to the leader, so concurrent ones leave the follower's outbox packed.
    cluster = make_cluster(3, overrides={"server": {"touch_interval_ms": 0}})
    leader = cluster.wait_for_leader()
    cluster.wait_until(
        lambda: _status(cluster, leader).cluster_command_level >= MULTI_LEVEL, 30.0, "every member at level 5"
    )
    follower = next(n for n in cluster.node_ids if n != leader)
    created = _write_concurrently(cluster, leader)[: WRITERS * 4]
    wait_converged(cluster)
    raw, channel = stub(cluster, follower)
    problems: list[str] = []
    start = threading.Barrier(WRITERS)

    def toucher(mine: list[bytes]) -> None:
        start.wait(timeout=30)
        for token_hash in mine:
            try:
                answer = raw.Validate(pb.ValidateRequest(token_hash=token_hash, touch=True), timeout=20)
            except grpc.RpcError as exc:
                problems.append(f"{exc.code()}: {exc.details()}")
                continue
            if answer.session.attributes[0].value != b"x" * 300:
                problems.append("a touch answered another session")

    threads = [threading.Thread(target=toucher, args=(created[i::WRITERS],)) for i in range(WRITERS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        channel.close()
    assert problems == []
    assert _status(cluster, follower).packed_entries_proposed > 0, "the follower packed nothing"
    wait_converged(cluster)

"""The Batch RPC and the client's coalescing, on real nodes.

A batch item must end exactly as its own RPC would (status, message, trailers), and
concurrent client calls that travel together must each get their own answer, exactly once,
also when the leader dies in the middle of a burst. Each test counts the batches that were
actually sent, so it cannot pass on a run where no call was ever coalesced.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter

import grpc
import pytest

from sessionquorum.client import NotFound, OutcomeUnknown, SessionClient, Unavailable

from .conftest import ClientFactory, ClusterFactory
from .helpers import pb, stub, wait_converged

pytestmark = pytest.mark.cluster

THREADS = 24
CALLS_PER_THREAD = 30


def _rid() -> pb.RequestId:
    return pb.RequestId(client_id=secrets.token_bytes(8), sequence=1)


def _create(token_hash: bytes, principal: str = "") -> pb.CreateRequest:
    return pb.CreateRequest(
        request_id=_rid(),
        token_hash=token_hash,
        principal=principal,
        attributes=[pb.Attribute(name=b"who", value=token_hash[:4])],
        idle_timeout_ms=600_000,
        absolute_timeout_ms=3_600_000,
    )


def _batches_sent(client: SessionClient) -> int:
    return sum(c.batches_sent for c in client._caller._coalescers.values())


def test_batch_items_end_as_their_own_rpcs_would(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    raw, channel = stub(cluster, leader)
    first, second = secrets.token_bytes(32), secrets.token_bytes(32)
    try:
        raw.Create(_create(first))
        answer = raw.Batch(
            pb.BatchRequest(
                items=[
                    pb.BatchItem(validate=pb.ValidateRequest(token_hash=first)),
                    pb.BatchItem(create=_create(second, "bob")),
                    pb.BatchItem(validate=pb.ValidateRequest(token_hash=secrets.token_bytes(32))),
                    pb.BatchItem(create=_create(b"\x01" * 32)),  # one repeated byte: refused
                    pb.BatchItem(),  # no operation
                ]
            )
        )
        found, created, missing, refused, empty = answer.results
        assert found.WhichOneof("outcome") == "validate"
        assert found.validate.session.attributes[0].value == first[:4]
        assert created.WhichOneof("outcome") == "create" and created.create.session.principal == "bob"
        assert missing.error.code == grpc.StatusCode.NOT_FOUND.value[0]
        assert missing.error.trailers["sq-node"] == leader
        assert refused.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and refused.error.message
        assert empty.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert raw.Validate(pb.ValidateRequest(token_hash=second)).session.principal == "bob"
    finally:
        channel.close()

    follower = next(n for n in cluster.node_ids if n != leader)
    raw_f, channel_f = stub(cluster, follower)
    try:
        (redirected,) = raw_f.Batch(
            pb.BatchRequest(items=[pb.BatchItem(create=_create(secrets.token_bytes(32)))])
        ).results
        # Exactly what Create on a follower answers: FAILED_PRECONDITION and the leader's address.
        assert redirected.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert redirected.error.trailers["sq-leader"] == cluster.grpc_address(leader)
        with pytest.raises(grpc.RpcError) as empty_batch:
            raw_f.Batch(pb.BatchRequest())
        assert empty_batch.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    finally:
        channel_f.close()


def test_concurrent_calls_travel_in_batches_and_each_gets_its_own_answer(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    client = make_client(cluster, read_from="any")
    problems: list[str] = []

    def work(n: int) -> None:
        for i in range(CALLS_PER_THREAD):
            mine = f"{n}-{i}"
            created = client.create(attributes={"who": mine.encode()})
            if client.validate(created.token).attributes.get("who") != mine.encode():
                problems.append(f"validate of {mine} answered another session")
            updated = client.update(created.token, set={"step": b"2"})
            if updated.handle != created.session.handle:
                problems.append(f"update of {mine} answered another session")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []
    assert _batches_sent(client) > 0, "no call was coalesced: this run proves nothing about batches"
    wait_converged(cluster)


def test_leader_kill_during_a_burst_of_coalesced_calls_loses_no_acknowledged_write(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3, overrides={"raft": {"leader_fallback_s": 1.0}})
    client = make_client(cluster)
    counter = client.create(attributes={"n": b"0"})
    acked: Counter[str] = Counter()
    lock = threading.Lock()
    half = threading.Barrier(THREADS + 1)

    def work() -> None:
        for i in range(CALLS_PER_THREAD):
            if i == CALLS_PER_THREAD // 2:
                half.wait(timeout=60)
            try:
                client.update(counter.token, increment={"hits": 1})
                outcome = "ok"
            except OutcomeUnknown:
                outcome = "unknown"
            except Unavailable:
                outcome = "unavailable"
            with lock:
                acked[outcome] += 1

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    half.wait(timeout=60)
    old = cluster.wait_for_leader()
    before_kill = _batches_sent(client)
    cluster.kill(old)
    for t in threads:
        t.join()
    batches = _batches_sent(client)
    # The hazard happened: calls were coalesced across the failover, to a new leader.
    assert batches > before_kill, (before_kill, batches)
    assert cluster.wait_for_leader() != old
    hits = int(client.validate(counter.token).attributes.get("hits", b"0"))
    # Every acknowledged increment applied exactly once; an unknown one at most once.
    assert acked["ok"] <= hits <= acked["ok"] + acked["unknown"], (acked, hits, batches)
    with pytest.raises(NotFound):
        client.validate(secrets.token_urlsafe(32))

"""A client shared across os.fork(): each half gets its own request ids, channels and locks.

A web server that uses the client at start-up and then forks its workers (gunicorn
`--preload`) hands every worker a copy of the client (issue 9, finding 1). These tests fork
the test process itself while it shares a client with an in-process server (the fake nodes
of test_client_server.py, which keep running in the parent and record what both halves
sent); the child runs through tests.forking.in_child.
"""

# start_node, imported from test_client_server, is a fixture that pytest passes by name.
# ruff: noqa: F811

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from sessionquorum.client import AsyncSessionClient, SessionClient, _fork, hash_token
from sessionquorum.client._lanes import LanePool
from sessionquorum.proto import sessionquorum_pb2 as pb
from tests.aio import run_async
from tests.forking import in_child
from tests.unit.test_client_server import (  # noqa: F401
    CLUSTER_NOW_MS,
    FAST,
    StartNode,
    forgetting_ids_older_than_now,
    leader_script,
    ok,
    start_node,
)


@pytest.fixture
def client_of(start_node: StartNode) -> Iterator[Callable[..., SessionClient]]:
    clients: list[SessionClient] = []

    def make(address: str, **options: Any) -> SessionClient:
        client = SessionClient([address], insecure=True, **{**FAST, **options})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def request_ids(requests: list[Any]) -> list[tuple[bytes, int]]:
    return [(r.request_id.client_id, r.request_id.sequence) for r in requests]


# -- the lanes alone ----------------------------------------------------------------------


def test_lane_pool_after_fork_makes_fresh_ids_with_learned_epoch_and_drops_leased_lanes() -> None:
    pool = LanePool()
    with pool.lease(pb.CreateRequest()) as before:
        pass
    pool.learn_epoch(CLUSTER_NOW_MS)
    held = pool.lease(pb.CreateRequest())  # a call in flight (in a parent thread) at the fork
    in_flight = held.__enter__()

    pool.reset_after_fork()
    held.__exit__(None, None, None)  # released in the child: must not be handed out there
    with pool.lease(pb.CreateRequest()) as first, pool.lease(pb.CreateRequest()) as second:
        pass

    inherited = {before.request_id.client_id, in_flight.request_id.client_id}
    assert first.request_id.client_id not in inherited
    assert second.request_id.client_id not in inherited
    # Learned before the fork, so before these ids' first use: the node's rule holds.
    assert first.request_id.client_epoch_ms == CLUSTER_NOW_MS
    assert (first.request_id.sequence, second.request_id.sequence) == (1, 1)


def test_fork_registry_keeps_no_client_alive() -> None:
    client = SessionClient(["127.0.0.1:1"], insecure=True)
    alive = weakref.ref(client)
    assert client in _fork._live
    client.close()
    del client
    gc.collect()
    assert alive() is None


# -- a SessionClient shared across a fork -------------------------------------------------


def test_forked_child_and_parent_both_succeed_under_distinct_request_ids(
    start_node: StartNode, client_of: Callable[..., SessionClient]
) -> None:
    # The node forgets every id first used before CLUSTER_NOW_MS: the parent learns that
    # time before the fork, and the child's new ids carry it without a refused round trip.
    address, node = start_node(forgetting_ids_older_than_now)
    client = client_of(address)
    client.create()  # the parent's channel is open, a lane is idle, the epoch is learned
    calls_per_half = 12

    def create_many() -> list[str]:
        with ThreadPoolExecutor(max_workers=4) as pool:  # concurrent: coalescer and lanes
            created = list(pool.map(lambda _: client.create(principal="p"), range(calls_per_half)))
        for c in created:
            client.update(c.token, increment={"n": 1})
        return [c.token for c in created]

    parent_half: list[str] = []
    parent = threading.Thread(target=lambda: parent_half.extend(create_many()))
    try:  # the parent calls while the child runs, both from the lanes they had at the fork
        child_half: list[str] = in_child(create_many, then=parent.start)
    finally:
        parent.join()

    creates = node.requests("Create")
    by_hash = {r.token_hash: r for r in creates}
    child_ids = {by_hash[hash_token(t)].request_id.client_id for t in child_half}
    parent_ids = {by_hash[hash_token(t)].request_id.client_id for t in parent_half}
    assert len(child_half) == len(parent_half) == calls_per_half
    assert child_ids.isdisjoint(parent_ids)
    mutations = creates + node.requests("Update")
    assert len(set(request_ids(mutations))) == len(mutations) == 1 + 1 + 4 * calls_per_half
    # One refusal in all: the parent's first call, before it had learned the cluster's time.
    assert [r.request_id.client_epoch_ms for r in creates].count(0) == 1


def test_fork_while_parent_calls_are_in_flight_child_neither_waits_for_their_slots_nor_takes_their_ids(
    start_node: StartNode, client_of: Callable[..., SessionClient]
) -> None:
    release = threading.Event()
    arrivals = threading.Semaphore(0)
    numbers = iter(range(1, 100))
    lock = threading.Lock()

    def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        with lock:
            number = next(numbers)
        if number in (2, 3):  # the parent's two calls in flight: held until the child is done
            arrivals.release()
            release.wait(10.0)
        return ok(method, request)

    address, node = start_node(script)
    # Attempts outlast the child's work, so the parent's calls are each sent exactly once.
    client = client_of(address, timeout_s=15.0, attempt_timeout_s=10.0)
    client.update("warm-up", set={"k": b"v"})  # leaves an idle lane behind
    with ThreadPoolExecutor(max_workers=3) as pool:
        # Two take the node's slots, the third waits in the coalescer's queue; all hold lanes.
        pending = [pool.submit(client.update, f"t{i}", set={"k": b"v"}) for i in range(3)]
        for _ in range(2):
            assert arrivals.acquire(timeout=5.0)
        try:
            # Inherited slots and queue would hold this call until its deadline, in vain.
            child_result = in_child(lambda: client.update("c", set={"k": b"v"}, timeout_s=3.0).version)
        finally:
            release.set()
        for future in pending:
            future.result(timeout=5.0)

    updates = node.requests("Update")
    assert child_result == 3
    assert len(updates) == 5
    assert len(set(request_ids(updates))) == 5
    (child_request,) = [r for r in updates if r.token_hash == hash_token("c")]
    parent_ids = {r.request_id.client_id for r in updates if r is not child_request}
    assert child_request.request_id.client_id not in parent_ids


# -- an AsyncSessionClient shared across a fork -------------------------------------------


def test_async_client_made_before_fork_works_in_child_with_its_own_ids(start_node: StartNode) -> None:
    address, node = start_node(leader_script)
    # Made at start-up (outside any loop) and not called before the fork.
    client = AsyncSessionClient([address], insecure=True, timeout_s=2.0, attempt_timeout_s=0.5)

    def in_worker() -> str:
        async def main() -> str:
            async with client:
                return (await client.create()).token

        return run_async(main())

    token = in_child(in_worker)
    parent_token = run_async(_create_and_close(client))

    first, second = node.requests("Create")
    assert {first.token_hash, second.token_hash} == {hash_token(token), hash_token(parent_token)}
    assert first.request_id.client_id != second.request_id.client_id


async def _create_and_close(client: AsyncSessionClient) -> str:
    async with client:
        return (await client.create()).token


def test_async_client_used_before_fork_refuses_in_child_instead_of_hanging(start_node: StartNode) -> None:
    address, node = start_node(leader_script)
    client = AsyncSessionClient([address], insecure=True, timeout_s=2.0, attempt_timeout_s=0.5)
    run_async(client.create())  # grpc.aio ran in the parent: unusable in a forked child

    def in_worker() -> str:
        try:
            run_async(client.create())
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    message = in_child(in_worker)
    run_async(client.close())

    assert "grpc.aio cannot be used in a child forked after it ran" in message
    assert len(node.requests("Create")) == 1

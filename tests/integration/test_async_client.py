"""AsyncSessionClient on real nodes: coalescing into Batch RPCs, and a leader kill -9 mid-burst.

Like test_batch.py for the thread client, each test counts the batches the client sent, so
it cannot pass on a run where no call travelled in a batch.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter

import pytest

from sessionquorum.client import AsyncSessionClient, NotFound, OutcomeUnknown, TLSConfig, Unavailable
from sessionquorum.cluster import LocalCluster
from tests.aio import run_async

from .conftest import ClusterFactory
from .helpers import wait_converged

pytestmark = pytest.mark.cluster

TASKS = 48
CALLS_PER_TASK = 24


def _client(cluster: LocalCluster, **kwargs: object) -> AsyncSessionClient:
    tls = cluster.tls_files
    return AsyncSessionClient(
        cluster.endpoints,
        tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key),
        **kwargs,  # type: ignore[arg-type]
    )


def test_async_concurrent_calls_travel_in_batches_and_each_gets_its_own_answer(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    problems: list[str] = []

    async def work(client: AsyncSessionClient, n: int) -> None:
        for i in range(CALLS_PER_TASK // 4):
            mine = f"{n}-{i}".encode()
            created = await client.create(attributes={"who": mine})
            if (await client.validate(created.token)).attributes.get("who") != mine:
                problems.append(f"validate of {mine!r} answered another session")
            updated = await client.update(created.token, set={"step": b"2"})
            if updated.handle != created.session.handle:
                problems.append(f"update of {mine!r} answered another session")

    async def main() -> int:
        async with _client(cluster, read_from="any") as client:
            await asyncio.gather(*(work(client, n) for n in range(TASKS)))
            return client._caller.batches_sent

    batches = run_async(main())
    assert problems == []
    assert batches > 0, "no call was coalesced: this run proves nothing about batches"
    wait_converged(cluster)


def test_async_leader_kill_during_a_burst_loses_no_acknowledged_create_or_increment(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, overrides={"raft": {"leader_fallback_s": 1.0}})
    acked: Counter[str] = Counter()
    created_tokens: list[str] = []

    async def work(client: AsyncSessionClient, counter: str) -> None:
        for _ in range(CALLS_PER_TASK):
            try:
                created = await client.create(attributes={"n": b"1"})
                created_tokens.append(created.token)
            except (OutcomeUnknown, Unavailable):
                acked["create not acknowledged"] += 1
            try:
                await client.update(counter, increment={"hits": 1})
                acked["ok"] += 1
            except OutcomeUnknown:
                acked["unknown"] += 1
            except Unavailable:
                acked["unavailable"] += 1

    async def main() -> tuple[int, int, int, int]:
        async with _client(cluster) as client:
            counter = (await client.create()).token
            burst = [asyncio.create_task(work(client, counter)) for _ in range(TASKS)]
            while acked["ok"] < TASKS * CALLS_PER_TASK // 3:
                await asyncio.sleep(0.01)
            old = await asyncio.to_thread(cluster.wait_for_leader)
            before_kill, acked_before_kill = client._caller.batches_sent, acked["ok"]
            await asyncio.to_thread(cluster.kill, old)
            await asyncio.gather(*burst)
            assert await asyncio.to_thread(cluster.wait_for_leader) != old
            # Every acknowledged create is there, on the new leader (linearizable reads).
            found = await asyncio.gather(*(client.validate(token) for token in created_tokens))
            assert all(session.attributes.get("n") == b"1" for session in found)
            hits = int((await client.validate(counter)).attributes.get("hits", b"0"))
            with pytest.raises(NotFound):
                await client.validate(secrets.token_urlsafe(32))
            return before_kill, client._caller.batches_sent, acked_before_kill, hits

    before_kill, batches, acked_before_kill, hits = run_async(main())
    # The hazard happened: calls were acknowledged and coalesced after the kill, by a new leader.
    assert batches > before_kill, (before_kill, batches)
    assert acked["ok"] > acked_before_kill, acked
    # Every acknowledged increment applied exactly once; an unknown one at most once.
    assert acked["ok"] <= hits <= acked["ok"] + acked["unknown"], (acked, hits, batches)
    assert len(created_tokens) > TASKS * CALLS_PER_TASK // 2, acked

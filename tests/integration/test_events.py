"""Lifecycle events on real nodes: commit order everywhere, resume across a killed node,
compaction, the stream quota, and a clean end when a node stops."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import cast

import grpc
import pytest

from sessionquorum.client import AsyncSessionClient, Event, EventsCompacted, SessionClient, TLSConfig
from sessionquorum.client._routing import Router
from sessionquorum.client._routing import trailers as routing_trailers
from sessionquorum.cluster import LocalCluster
from sessionquorum.cluster._cli import main as cli_main
from sessionquorum.proto import sessionquorum_pb2 as pb

from .conftest import ClientFactory, ClusterFactory
from .helpers import stub, wait_converged

STREAM_TIMEOUT_S = 30.0
ENABLED_TIMEOUT_S = 30.0


def _read(cluster: LocalCluster, node_id: str, after: int, count: int) -> list[pb.Event]:
    """`count` events after `after` from one node's stream (raw stub, bounded by a deadline)."""
    node_stub, _ = stub(cluster, node_id)
    call = node_stub.Events(pb.EventsRequest(after=after), timeout=STREAM_TIMEOUT_S)
    out: list[pb.Event] = []
    try:
        for message in call:
            out.append(message)
            if len(out) == count:
                break
    finally:
        call.cancel()
    return out


def _wait_enabled(cluster: LocalCluster) -> None:
    """The leader switches the ring on shortly after start (duties.enable_events)."""

    def enabled() -> bool | None:
        statuses = [cluster.status(n) for n in cluster.node_ids]
        return all(st is not None and st.events_enabled for st in statuses) or None

    cluster.wait_until(enabled, ENABLED_TIMEOUT_S, "lifecycle events to be enabled on every node")


def _summary(events: list[pb.Event]) -> list[tuple[str, str, str, str]]:
    return [(e.kind, e.handle, e.principal, e.reason) for e in events]


def test_lifecycle_events_arrive_in_commit_order_on_the_leader_and_a_follower(
    make_cluster: ClusterFactory, make_client: ClientFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = make_cluster(3, overrides={"server": {"sweep_interval_s": 0.2}})
    _wait_enabled(cluster)
    client = make_client(cluster, admin=True)
    alice = client.create(principal="alice", attributes={"cart": b"secret-cart"})
    client.update(alice.token, set={"cart": b"other-cart"})
    rotated = client.rotate(alice.token)
    client.delete(rotated.token)
    bob1 = client.create(principal="bob")
    bob2 = client.create(principal="bob")
    client.revoke_principal("bob")
    brief = client.create(idle_timeout_s=1.0, absolute_timeout_s=60.0)  # the sweep expires it
    h = alice.session.handle
    expected = [
        ("created", h, "alice", ""),
        ("updated", h, "alice", ""),
        ("rotated", h, "alice", ""),
        ("deleted", h, "alice", ""),
        ("created", bob1.session.handle, "bob", ""),
        ("created", bob2.session.handle, "bob", ""),
        *sorted(("revoked", b.session.handle, "bob", "principal") for b in (bob1, bob2)),
        ("created", brief.session.handle, "", ""),
        ("expired", brief.session.handle, "", "idle"),
    ]
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    on_leader = _read(cluster, leader, 0, len(expected))
    on_follower = _read(cluster, follower, 0, len(expected))
    assert _summary(on_leader) == expected
    assert on_follower == on_leader  # same cursors, times and order on every node
    assert [e.cursor for e in on_leader] == list(range(1, len(expected) + 1))
    # Never a token hash or a value: the message has no such field, and no string holds one.
    text = b"".join(e.SerializeToString() for e in on_leader)
    assert b"secret-cart" not in text and b"other-cart" not in text
    # The operator's tail: `python -m sessionquorum.cluster events --after 2 --count 3 --json`.
    capsys.readouterr()
    argv = ["events", "--data-dir", str(cluster.data_dir), "--after", "2", "--count", "3", "--json"]
    assert cli_main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["cursor"], x["kind"], x["handle"]) for x in lines] == [
        (3, "rotated", h),
        (4, "deleted", h),
        (5, "created", bob1.session.handle),
    ]


def _consume(client: SessionClient, cursor: int, want: int, out: list[Event], done: threading.Event) -> None:
    events: Iterator[Event] = client.events(cursor)
    try:
        for event in events:
            out.append(event)
            if len(out) == want:
                break
    finally:
        done.set()


def _consume_async(
    cluster: LocalCluster,
    endpoints: list[str],
    cursor: int,
    want: int,
    out: list[Event],
    done: threading.Event,
) -> None:
    async def run() -> None:
        tls = cluster.admin_tls_files
        async with AsyncSessionClient(
            endpoints, tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key)
        ) as client:
            async for event in client.events(cursor):
                out.append(event)
                if len(out) == want:
                    break

    try:
        asyncio.run(run())
    finally:
        done.set()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_stream_resumes_on_another_node_after_its_node_is_killed_without_gap_or_duplicate(
    make_cluster: ClusterFactory, make_client: ClientFactory, flavour: str
) -> None:
    cluster = make_cluster(3)
    _wait_enabled(cluster)
    writer = make_client(cluster, admin=True)
    first = writer.create()
    start = _read(cluster, cluster.node_ids[0], 0, 1)[0].cursor  # the create above (or later)
    assert start >= 1
    # The reader's first stream goes to its second endpoint (Router.spread): that node dies.
    endpoints = list(cluster.endpoints)
    victim = cluster.node_ids[1]
    total = 40
    received: list[Event] = []
    done = threading.Event()
    target: Callable[[], None]
    if flavour == "sync":
        target = functools.partial(
            _consume, make_client(cluster, endpoints, admin=True), 0, total, received, done
        )
    else:
        target = functools.partial(_consume_async, cluster, endpoints, 0, total, received, done)
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    handles = [first.session.handle]
    for _ in range(total // 2 - 1):
        handles.append(writer.create().session.handle)
    cluster.wait_until(lambda: len(received) >= 5 or None, STREAM_TIMEOUT_S, "the reader to receive events")
    cluster.kill(victim)
    for _ in range(total // 2):
        handles.append(writer.create().session.handle)
    assert done.wait(STREAM_TIMEOUT_S), f"the reader got {len(received)} of {total} events"
    thread.join(STREAM_TIMEOUT_S)
    assert [e.cursor for e in received] == list(range(1, total + 1))  # no gap, no duplicate
    assert [e.handle for e in received] == handles
    assert {e.kind for e in received} == {"created"}
    # The kill cut the reader's stream: its first stream went to the victim.
    assert Router(endpoints).spread() == cluster.grpc_address(victim)


def test_a_cursor_older_than_the_retained_events_is_answered_compacted(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(1, overrides={"server": {"events_retention_count": 16}})
    _wait_enabled(cluster)
    client = make_client(cluster, admin=True)
    for _ in range(40):
        client.create()
    node = cluster.node_ids[0]
    with pytest.raises(grpc.RpcError) as caught:
        _read(cluster, node, 0, 1)
    assert caught.value.code() is grpc.StatusCode.OUT_OF_RANGE
    trailers = routing_trailers(caught.value)
    assert trailers["sq-oldest-cursor"] == "24"  # 40 events, 16 kept: 25..40
    status = cluster.status(node)
    assert status is not None and (status.events_oldest_cursor, status.events_last_cursor) == (25, 40)
    with pytest.raises(EventsCompacted) as compacted:
        next(client.events(cursor=3))
    assert compacted.value.oldest_cursor == 24
    resumed = client.events(cursor=compacted.value.oldest_cursor)
    assert next(resumed).cursor == 25
    resumed.close()  # type: ignore[attr-defined]

    async def read_async() -> tuple[int, int]:
        tls = cluster.admin_tls_files
        async with AsyncSessionClient(
            cluster.endpoints, tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key)
        ) as aclient:
            with pytest.raises(EventsCompacted) as too_old:
                await anext(aclient.events(cursor=3))
            events = aclient.events(cursor=too_old.value.oldest_cursor)
            first = await anext(events)
            await events.aclose()  # type: ignore[attr-defined]
            return too_old.value.oldest_cursor, first.cursor

    assert asyncio.run(read_async()) == (24, 25)


def test_event_streams_beyond_the_nodes_quota_are_refused_resource_exhausted(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(1, overrides={"server": {"max_event_streams": 2}})
    _wait_enabled(cluster)
    node_stub, _ = stub(cluster, cluster.node_ids[0])
    calls = [node_stub.Events(pb.EventsRequest(), timeout=STREAM_TIMEOUT_S) for _ in range(2)]
    try:
        for call in calls:
            call.initial_metadata()  # open and counted
        third = node_stub.Events(pb.EventsRequest(), timeout=STREAM_TIMEOUT_S)
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(third))
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        calls.pop().cancel()

        def reopened() -> bool | None:
            call = node_stub.Events(pb.EventsRequest(), timeout=STREAM_TIMEOUT_S)
            try:
                call.initial_metadata()
                if cast(
                    "grpc.Future[pb.Event]", call
                ).done():  # refused: the cancelled stream was not released yet
                    return None
                calls.append(call)
                return True
            except grpc.RpcError:
                return None

        cluster.wait_until(reopened, STREAM_TIMEOUT_S, "a freed stream slot")
    finally:
        for call in calls:
            call.cancel()


def test_a_stream_ends_cleanly_when_its_node_stops(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(1)
    _wait_enabled(cluster)
    node = cluster.node_ids[0]
    node_stub, _ = stub(cluster, node)
    call = node_stub.Events(pb.EventsRequest(), timeout=STREAM_TIMEOUT_S)
    call.initial_metadata()
    started = time.monotonic()
    pid = cluster.pid(node)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    assert list(call) == []  # the stream ended without an error ...
    assert call.code() is grpc.StatusCode.OK
    assert time.monotonic() - started < STREAM_TIMEOUT_S / 2  # ... at the stop, not at the deadline


def test_a_follower_that_installed_a_snapshot_serves_the_events_before_it(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    """Retention is replicated state: a snapshot carries the ring, so a node that caught up
    by snapshot serves cursors below its snapshot like the others (no spurious compaction)."""
    cluster = make_cluster(3, overrides={"raft": {"journal_max_bytes": 256 * 1024, "compaction_entries": 64}})
    _wait_enabled(cluster)
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    client = make_client(cluster, timeout_s=30.0, admin=True)
    created = [client.create() for _ in range(10)]
    cluster.kill(follower)
    installs_before = cluster.log_path(follower).read_text(errors="replace").count("installed a snapshot")
    for i in range(300):
        client.update(created[i % 10].token, set={"n": str(i).encode()})
    cluster.restart(follower)
    wait_converged(cluster)
    installs = cluster.log_path(follower).read_text(errors="replace").count("installed a snapshot")
    assert installs > installs_before, "the follower caught up without a snapshot install"
    on_follower = _read(cluster, follower, 0, 310)
    assert on_follower == _read(cluster, leader, 0, 310)
    assert [e.cursor for e in on_follower] == list(range(1, 311))

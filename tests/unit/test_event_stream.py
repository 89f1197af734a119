"""The Events handler (store/event_stream.py) and the clients' resume rules (client/_events.py),
without a network: a fake log around a real SessionMachine, a fake stream context."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import pytest

from sessionquorum.client import EventsCompacted, QuotaExceeded, Unavailable
from sessionquorum.client._events import EventReader
from sessionquorum.client._routing import Router
from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.store import commands as c
from sessionquorum.store import errors as e
from sessionquorum.store.config import Limits
from sessionquorum.store.event_stream import PAGE_EVENTS, EventFeed, EventStreams
from sessionquorum.store.state import SessionMachine

_T = TypeVar("_T")


class _Log:
    """What EventStreams needs of ReplicatedLog: locked reads and a read index."""

    def __init__(self, machine: SessionMachine) -> None:
        self.machine = machine
        self.lock = threading.Lock()
        self.read_indexes = 0

    def read(self, fn: Callable[[SessionMachine], _T]) -> _T:
        with self.lock:
            return fn(self.machine)

    async def read_index(self) -> int:
        self.read_indexes += 1
        return 0


class _Context:
    """A stream context whose writes wait until `released` (a reader that does not read)."""

    def __init__(self, blocked: bool = False) -> None:
        self.written: list[pb.Event] = []
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.released = asyncio.Event()
        if not blocked:
            self.released.set()
        self.writing = asyncio.Event()

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    async def write(self, message: pb.Event) -> None:
        self.writing.set()
        await self.released.wait()
        self.written.append(message)


def _machine(max_count: int = 64) -> SessionMachine:
    m = SessionMachine(Limits())
    m.apply(c.encode(c.Command(c.EnableEvents(max_count, 1 << 20), now_ms=1)))
    return m


def _create(log: _Log, feed: EventFeed, i: int) -> None:
    op = c.Create(hashlib.sha256(b"%d" % i).digest(), f"h{i}", None, (), 60_000, 3_600_000)
    with log.lock:
        log.machine.apply(c.encode(c.Command(op, now_ms=1_000 + i)))
    feed.poke()  # what node.py's on_applied does after every apply


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)  # yield to the stream task; bounded
    raise AssertionError("condition not reached")


def _setup(max_count: int = 64, max_streams: int = 4) -> tuple[_Log, EventFeed, EventStreams]:
    machine = _machine(max_count)
    log = _Log(machine)
    feed = EventFeed(machine)
    feed.bind(asyncio.get_running_loop())
    return log, feed, EventStreams(log, feed, max_streams)  # type: ignore[arg-type]


def test_a_waiting_stream_is_woken_by_apply_and_ends_cleanly_on_close() -> None:
    async def scenario() -> None:
        log, feed, streams = _setup()
        ctx = _Context()
        task = asyncio.create_task(streams.serve(pb.EventsRequest(), ctx))
        await _until(lambda: ctx.metadata != ())
        assert ctx.metadata == (("sq-cursor", "0"),)
        for i in range(3):
            _create(log, feed, i)
        await _until(lambda: len(ctx.written) == 3)
        assert [m.cursor for m in ctx.written] == [1, 2, 3] and ctx.written[0].kind == "created"
        feed.close()
        await asyncio.wait_for(task, 5)  # returns: status OK
        assert feed.streams == 0

    asyncio.run(scenario())


def test_streams_end_while_the_node_hears_no_leader_and_new_ones_are_refused() -> None:
    """A node cut off from the cluster applies nothing: its readers must move on, not wait."""

    async def scenario() -> None:
        _, feed, streams = _setup()
        task = asyncio.create_task(streams.serve(pb.EventsRequest(), _Context()))
        await _until(lambda: feed.streams == 1)
        feed.set_serving(False)
        await asyncio.wait_for(task, 5)  # ended, status OK: the client resumes elsewhere
        with pytest.raises(e.NotReady):
            await streams.serve(pb.EventsRequest(), _Context())
        feed.set_serving(True)
        again = asyncio.create_task(streams.serve(pb.EventsRequest(), _Context()))
        await _until(lambda: feed.streams == 1)
        feed.close()
        await asyncio.wait_for(again, 5)

    asyncio.run(scenario())


def test_a_reader_that_does_not_read_holds_one_page_and_is_told_compacted() -> None:
    """A slow consumer costs the node one page: the ring moves on and the stream is refused."""

    async def scenario() -> None:
        log, feed, streams = _setup(max_count=16)
        ctx = _Context(blocked=True)
        _create(log, feed, 0)
        task = asyncio.create_task(streams.serve(pb.EventsRequest(after=0), ctx))
        await asyncio.wait_for(ctx.writing.wait(), 5)  # stuck writing event 1
        for i in range(1, 100):
            _create(log, feed, i)
        ctx.released.set()
        with pytest.raises(e.EventsCompacted) as caught:
            await asyncio.wait_for(task, 5)
        assert caught.value.oldest_cursor == 100 - 16
        assert len(ctx.written) == 1  # the page it held, nothing queued for it

    asyncio.run(scenario())


def test_a_catching_up_stream_reads_the_ring_in_pages() -> None:
    async def scenario() -> None:
        log, feed, streams = _setup(max_count=1024)
        for i in range(PAGE_EVENTS + 10):
            _create(log, feed, i)
        ctx = _Context()
        task = asyncio.create_task(streams.serve(pb.EventsRequest(after=0), ctx))
        await _until(lambda: len(ctx.written) == PAGE_EVENTS + 10)
        assert [m.cursor for m in ctx.written] == list(range(1, PAGE_EVENTS + 11))
        feed.close()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())


def test_streams_beyond_the_quota_are_refused_and_a_freed_slot_is_reused() -> None:
    async def scenario() -> None:
        _, feed, streams = _setup(max_streams=1)
        first = asyncio.create_task(streams.serve(pb.EventsRequest(), _Context()))
        await _until(lambda: feed.streams == 1)
        with pytest.raises(e.QuotaExceeded):
            await streams.serve(pb.EventsRequest(), _Context())
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert feed.streams == 0
        again = asyncio.create_task(streams.serve(pb.EventsRequest(), _Context()))
        await _until(lambda: feed.streams == 1)
        feed.close()
        await asyncio.wait_for(again, 5)

    asyncio.run(scenario())


def test_a_cursor_ahead_of_this_node_waits_for_the_read_index_then_is_refused_if_still_ahead() -> None:
    async def scenario() -> None:
        log, _, streams = _setup()
        with pytest.raises(e.InvalidArgument):
            await streams.serve(pb.EventsRequest(after=5), _Context())
        assert log.read_indexes == 1

    asyncio.run(scenario())


def test_a_ring_not_enabled_yet_is_unavailable() -> None:
    async def scenario() -> None:
        machine = SessionMachine(Limits())
        feed = EventFeed(machine)
        streams = EventStreams(_Log(machine), feed, 4)  # type: ignore[arg-type]
        with pytest.raises(e.NotReady):
            await streams.serve(pb.EventsRequest(after=0), _Context())

    asyncio.run(scenario())


# ------------------------------------------------------------------ client resume rules
class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        self._code, self._trailers = code, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return f"status {self._code.name}"

    def trailing_metadata(self) -> Any:
        return self._trailers


def test_a_reader_from_now_learns_its_cursor_before_any_event_and_resumes_after_it() -> None:
    reader = EventReader(Router(["a:1", "b:1"]), None, 10.0)
    assert not reader.request().HasField("after")
    reader.opened((("sq-cursor", "41"),))
    reader.failed(_RpcError(grpc.StatusCode.UNAVAILABLE))  # the node died before any event
    assert reader.request().after == 41


def test_a_reader_drops_an_event_it_already_handed_out() -> None:
    reader = EventReader(Router(["a:1"]), 5, 10.0)
    assert reader.accept(pb.Event(cursor=5)) is None
    event = reader.accept(pb.Event(cursor=6, kind="created", handle="h", principal=""))
    assert event is not None and event.cursor == 6 and event.principal is None
    assert reader.request().after == 6


def test_compacted_is_a_typed_error_with_the_oldest_cursor() -> None:
    reader = EventReader(Router(["a:1"]), 3, 10.0)
    with pytest.raises(EventsCompacted) as caught:
        reader.failed(_RpcError(grpc.StatusCode.OUT_OF_RANGE, (("sq-oldest-cursor", "24"),)))
    assert caught.value.oldest_cursor == 24


def test_a_full_node_is_skipped_until_every_node_refused_in_a_row() -> None:
    reader = EventReader(Router(["a:1", "b:1", "c:1"]), 0, 10.0)
    full = _RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED)
    reader.failed(full)
    reader.failed(full)
    with pytest.raises(QuotaExceeded):
        reader.failed(full)


def test_a_reader_gives_up_when_no_node_served_for_its_timeout() -> None:
    now = [100.0]
    reader = EventReader(Router(["a:1"]), 0, 10.0, clock=lambda: now[0])
    reader.failed(_RpcError(grpc.StatusCode.UNAVAILABLE))
    now[0] += 9.0
    reader.failed(_RpcError(grpc.StatusCode.UNAVAILABLE))  # still trying
    now[0] += 2.0
    with pytest.raises(Unavailable):
        reader.failed(_RpcError(grpc.StatusCode.UNAVAILABLE))

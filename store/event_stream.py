"""The Events RPC: lifecycle events in commit order, read from the replicated ring by cursor.

Any node serves it: every node applies the same log, so its ring holds the same events
under the same cursors (store/events.py); a follower may lag, never reorder. A stream
- starts after the request's cursor, or at the ring's end when it has none;
- sends from the ring in pages of at most PAGE_EVENTS, each read under one short hold of
  the state lock, and awaits each write (gRPC flow control): a reader that does not read
  holds one page of this node's memory, never a queue. When the ring moves past it, it is
  answered OUT_OF_RANGE (`EventsCompacted`) with the oldest cursor it may resume after;
- waits for new events without polling: `EventFeed.poke` runs after every apply on the
  tick thread and, when the ring grew and a stream exists, wakes the event loop once;
- ends cleanly (status OK) when the node stops (`EventFeed.close`), or hears no leader
  (`EventFeed.set_serving`, from the health watch: a cut-off node applies nothing, so its
  streams would fall silent): the client resumes from its last cursor on another node,
  without a gap or a duplicate.
At most `server.max_event_streams` streams per node; one more is RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from sessionquorum.proto import sessionquorum_pb2 as pb

from . import errors as e
from . import events as ev
from .raft import ReplicatedLog
from .state import SessionMachine

log = logging.getLogger(__name__)

# Events read per hold of the state lock and sent before the next read.
PAGE_EVENTS = 256
# Initial metadata of every stream: the cursor it starts after. A reader that asked for
# "from now" learns its position before any event, so it can resume without a gap.
CURSOR_METADATA_KEY = "sq-cursor"


class EventFeed:
    """Tells waiting streams that the ring grew: the tick thread's side of the event loop."""

    def __init__(self, machine: SessionMachine) -> None:
        self._machine = machine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._seen = 0
        self._pending = False
        self.streams = 0
        self.closed = False
        # Whether this node hears a leader (duties.watch_leader, as health): a node cut off
        # from the cluster applies nothing, so its streams would wait silently forever.
        self.serving = True

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def poke(self) -> None:
        """After every apply, on the tick thread: cheap unless the ring grew and a stream waits."""
        ring = self._machine.lifecycle
        if ring is None or ring.next_cursor == self._seen:
            return
        self._seen = ring.next_cursor
        loop = self._loop
        # One wake-up in flight at a time: under load many applies share it. A stream reads
        # the ring after it took the current Event, so a wake-up between is never lost.
        if self.streams and not self._pending and loop is not None:
            self._pending = True
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop closed: the node is stopping
                self._pending = False

    def _wake(self) -> None:
        self._pending = False
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def changed(self) -> asyncio.Event:
        """The Event the next growth (or close) sets; take it BEFORE reading the ring."""
        return self._changed

    def set_serving(self, serving: bool) -> None:
        """On the loop: streams end (status OK) while this node hears no leader."""
        self.serving = serving
        if not serving:
            self._wake()

    @property
    def ended(self) -> bool:
        return self.closed or not self.serving

    def close(self) -> None:
        """On the loop: every stream ends cleanly at its next look."""
        self.closed = True
        self._wake()


def _message(event: ev.Event) -> pb.Event:
    cursor, at_ms, kind, handle, principal, reason = event
    return pb.Event(
        cursor=cursor, kind=kind, handle=handle, principal=principal or "", reason=reason, at_ms=at_ms
    )


NOT_ENABLED = "lifecycle events are not enabled yet (a new or upgrading cluster); retry"


def _page(m: SessionMachine, cursor: int) -> list[ev.Event] | ev.Compacted:
    ring = m.lifecycle
    if ring is None:  # (a ring is never switched off; this is a restore of an older state)
        raise e.NotReady(NOT_ENABLED)
    return ring.after(cursor, PAGE_EVENTS)


def _last_cursor(m: SessionMachine) -> int | None:
    return None if m.lifecycle is None else m.lifecycle.last_cursor


class EventStreams:
    def __init__(self, raft: ReplicatedLog, feed: EventFeed, max_streams: int) -> None:
        self._raft = raft
        self._feed = feed
        self._max_streams = max_streams

    async def _start(self, request: pb.EventsRequest) -> int:
        last = self._raft.read(_last_cursor)
        if last is None:
            raise e.NotReady(NOT_ENABLED)
        if not request.HasField("after"):
            return last
        after = request.after
        if after > last:
            # This node may lag behind the node the cursor came from: catch up to what the
            # cluster committed (ReadIndex), then the cursor must be known here.
            await self._raft.read_index()
            last = self._raft.read(_last_cursor) or 0
            if after > last:
                raise e.InvalidArgument(f"cursor {after} is after the cluster's last event ({last})")
        return after

    async def serve(self, request: pb.EventsRequest, context: Any) -> None:
        feed = self._feed
        if not feed.serving:
            raise e.NotReady("this node hears no leader (cut off from the cluster?); ask another node")
        if feed.streams >= self._max_streams:
            raise e.QuotaExceeded(
                f"this node serves at most {self._max_streams} event streams; try another node"
            )
        feed.streams += 1
        try:
            cursor = await self._start(request)
            await context.send_initial_metadata(((CURSOR_METADATA_KEY, str(cursor)),))
            while not feed.ended:
                changed = feed.changed()
                page = self._raft.read(functools.partial(_page, cursor=cursor))
                if isinstance(page, ev.Compacted):
                    raise e.EventsCompacted(
                        f"events after cursor {page.cursor} are no longer retained; "
                        f"the oldest cursor to resume after is {page.oldest}",
                        page.oldest,
                    )
                for event in page:
                    await context.write(_message(event))
                if page:
                    cursor = page[-1][0]
                    continue
                await changed.wait()
        finally:
            feed.streams -= 1

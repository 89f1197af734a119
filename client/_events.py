"""Reading lifecycle events: one stream at a time, resumed from the last cursor on failure.

Both clients' `events()` iterate through `EventReader`, which holds the cursor of the last
event handed to the caller and decides what a failed or ended stream means:
- a stream that ends cleanly (its node stopped) or fails transiently (UNAVAILABLE, a
  killed node, CANCELLED...) is reopened on the next node *after the last cursor*: every
  node holds the same events under the same cursors, so nothing is missed or repeated
  (an event at or below the cursor is dropped anyway, as a guard);
- a stream opened "from now" (no cursor) learns its starting cursor from the node's
  `sq-cursor` header before any event, so even a failure before the first event resumes
  without a gap;
- OUT_OF_RANGE with `sq-oldest-cursor` raises EventsCompacted; other definite errors
  (INVALID_ARGUMENT, PERMISSION_DENIED) raise at once; RESOURCE_EXHAUSTED (a node's stream
  quota) moves on, and raises QuotaExceeded once every node refused in a row;
- no node serving for `give_up_s` raises Unavailable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from sessionquorum.proto import sessionquorum_pb2 as pb

from ._channels import AsyncChannelPool, ChannelPool
from ._errors import SessionQuorumError, error_for_status
from ._retry import backoff_delay_s
from ._routing import Router, trailers

CURSOR_METADATA_KEY = "sq-cursor"
# Transient for a stream: try the next node from the same cursor.
_MOVE_ON = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
    }
)


@dataclass(frozen=True, slots=True)
class Event:
    """One lifecycle event. `cursor` orders all events of the cluster; pass the last one
    seen to `events(cursor=...)` to resume after it."""

    cursor: int
    kind: str  # created, rotated, updated, deleted, revoked, expired (more may come)
    handle: str
    principal: str | None
    reason: str  # revoked: principal | principal_cap; expired: idle | absolute
    at_ms: int  # the cluster's time of the command that caused it


def event_from_pb(message: pb.Event) -> Event:
    return Event(
        cursor=message.cursor,
        kind=message.kind,
        handle=message.handle,
        principal=message.principal or None,
        reason=message.reason,
        at_ms=message.at_ms,
    )


class EventReader:
    """The resume rules of one `events()` iteration (no I/O: the clients drive it)."""

    def __init__(
        self,
        router: Router,
        cursor: int | None,
        give_up_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cursor is not None and cursor < 0:
            raise ValueError(f"cursor must be >= 0, got {cursor}")
        self._router = router
        self.cursor = cursor
        self._give_up_s = give_up_s
        self._clock = clock
        self._failing_since: float | None = None
        self._failures = 0
        self._refusals = 0  # RESOURCE_EXHAUSTED in a row

    def next_endpoint(self) -> str:
        return self._router.spread()

    def request(self) -> pb.EventsRequest:
        return pb.EventsRequest() if self.cursor is None else pb.EventsRequest(after=self.cursor)

    def opened(self, metadata: Any) -> None:
        """The stream's initial metadata arrived: the node serves it."""
        for key, value in metadata or ():
            if key == CURSOR_METADATA_KEY and self.cursor is None:
                self.cursor = int(value)
        self._failing_since, self._failures, self._refusals = None, 0, 0

    def accept(self, message: pb.Event) -> Event | None:
        if self.cursor is not None and message.cursor <= self.cursor:
            return None  # already handed out (never expected: a guard against a duplicate)
        self.cursor = message.cursor
        return event_from_pb(message)

    def ended(self) -> float:
        """The node ended the stream cleanly (it is stopping): a short pause, then the next."""
        return backoff_delay_s(0)

    def failed(self, exc: grpc.RpcError) -> float:
        """Seconds to pause before the next node, or raise the error the caller should see."""
        code, found = exc.code(), trailers(exc)
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            self._refusals += 1
            if self._refusals >= len(self._router.endpoints):
                raise self._error(exc, found) from exc
        elif code not in _MOVE_ON:
            raise self._error(exc, found) from exc
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since > self._give_up_s:
            raise self._error(exc, found) from exc
        self._failures += 1
        return backoff_delay_s(self._failures - 1)

    @staticmethod
    def _error(exc: grpc.RpcError, found: Mapping[str, str]) -> SessionQuorumError:
        return error_for_status(exc.code(), exc.details(), trailers=found)


def read_events(channels: ChannelPool, reader: EventReader) -> Iterator[Event]:
    """SessionClient.events: blocks for each event; closing the iterator cancels the stream."""
    while True:
        call = channels.stub(reader.next_endpoint()).Events(reader.request())
        try:
            reader.opened(call.initial_metadata())
            for message in call:
                event = reader.accept(message)
                if event is not None:
                    yield event
            pause = reader.ended()
        except grpc.RpcError as exc:
            pause = reader.failed(exc)
        finally:
            call.cancel()
        time.sleep(pause)


async def read_events_async(channels: AsyncChannelPool, reader: EventReader) -> AsyncIterator[Event]:
    """AsyncSessionClient.events: the same rules, on the event loop."""
    while True:
        call = channels.stub(reader.next_endpoint()).Events(reader.request())
        try:
            reader.opened(await call.initial_metadata())
            async for message in call:
                event = reader.accept(message)
                if event is not None:
                    yield event
            pause = reader.ended()
        except grpc.RpcError as exc:
            pause = reader.failed(exc)
        finally:
            call.cancel()
        await asyncio.sleep(pause)

"""Coalescing for asyncio: concurrent calls of one event loop to one node share a Batch RPC.

The rules are those of _coalesce.py, which also builds the BatchRequest and maps its
results and failures (`batch_request`, `item_outcomes`, `item_error`, `batch_unsupported`):
per endpoint at most `MAX_IN_FLIGHT` calls travel at once; a call that finds a free slot
goes at once as its own RPC; calls that find none queue, and when a slot frees everything
queued (up to `MAX_BATCH`) leaves as one `Batch`, sent by a task that holds the freed slot.
No timer decides when a batch leaves. Each item's failure is an `ItemError` (a
grpc.RpcError) that the retry loop classifies like any other attempt; UNIMPLEMENTED turns
coalescing off for the endpoint.

Only the loop's thread touches a coalescer, so it needs no lock; a waiting call is a
future of that loop, failed by a `call_later` timer when its attempt timeout passes.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

from ._coalesce import (
    MAX_BATCH,
    MAX_IN_FLIGHT,
    ItemError,
    batch_request,
    batch_unsupported,
    item_error,
    item_outcomes,
    never_answered,
)

# A waiting call's result when the node has no Batch: send it alone after all.
_DIRECT = object()


class _Waiting:
    __slots__ = ("deadline", "future", "kind", "request")

    def __init__(self, kind: str, request: Any, deadline: float, future: asyncio.Future[Any]) -> None:
        self.kind, self.request, self.deadline, self.future = kind, request, deadline, future

    def settle(self, response: Any, error: BaseException | None) -> None:
        # The caller may have stopped waiting (its timeout, or its task was cancelled).
        if not self.future.done():
            if error is None:
                self.future.set_result(response)
            else:
                self.future.set_exception(error)


class AsyncCoalescer:
    """One endpoint's slots and queue, for the event loop that uses it."""

    def __init__(self, stub: Callable[[], pb_grpc.SessionStoreAsyncStub]) -> None:
        self._stub = stub
        self._in_flight = 0
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._batch_unsupported = False
        self._closed = False
        self._sending: set[asyncio.Task[None]] = set()
        self.batches_sent = 0  # tests and benchmarks read it

    async def call(
        self, kind: str, request: Any, timeout_s: float, direct: Callable[[], Awaitable[Any]]
    ) -> Any:
        """`direct()` sends the call as its own RPC; it runs here when a slot is free."""
        if self._batch_unsupported or (self._in_flight < MAX_IN_FLIGHT and not self._queue):
            self._in_flight += 1
            try:
                return await direct()
            finally:
                self._slot_freed()
        loop = asyncio.get_running_loop()
        waiting = _Waiting(kind, request, loop.time() + timeout_s, loop.create_future())
        self._queue.append(waiting)
        timer = loop.call_later(timeout_s, self._expire, waiting)
        try:
            response = await waiting.future
        finally:
            timer.cancel()
            if waiting.future.cancelled():
                # This caller was cancelled: a batch must not carry it any more.
                self._unqueue(waiting)
        if response is _DIRECT:
            return await direct()
        return response

    def close(self) -> None:
        """Fail the queued calls and stop the batches in flight; their callers give up."""
        self._closed = True
        for task in self._sending:
            task.cancel()
        while self._queue:
            self._queue.popleft().settle(
                None, ItemError(grpc.StatusCode.CANCELLED, "the client is closed", {})
            )

    def _unqueue(self, waiting: _Waiting) -> bool:
        try:
            self._queue.remove(waiting)
        except ValueError:
            return False
        return True

    def _expire(self, waiting: _Waiting) -> None:
        waiting.settle(None, never_answered(self._unqueue(waiting)))

    def _slot_freed(self) -> None:
        if not self._queue or self._closed:
            self._in_flight -= 1
            return
        items = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
        # The freed slot passes to the batch.
        task = asyncio.get_running_loop().create_task(self._send(items))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, items: list[_Waiting]) -> None:
        try:
            request = batch_request((w.kind, w.request) for w in items)
            timeout_s = max(0.001, max(w.deadline for w in items) - asyncio.get_running_loop().time())
            try:
                batch = self._stub().Batch
            except Exception as exc:  # a closed client: each caller retries or gives up on its own
                self._settle_all(items, ItemError(grpc.StatusCode.CANCELLED, str(exc), {}))
                return
            self.batches_sent += 1
            try:
                answer = await batch(request, timeout=timeout_s)
            except asyncio.CancelledError:
                self._settle_all(items, ItemError(grpc.StatusCode.CANCELLED, "the client is closed", {}))
                raise
            except Exception as exc:
                if batch_unsupported(exc):
                    self._batch_unsupported = True
                    for waiting in items:
                        waiting.settle(_DIRECT, None)
                else:
                    self._settle_all(items, exc)
                return
            outcomes = item_outcomes([w.kind for w in items], answer)
            for waiting, (response, error) in zip(items, outcomes, strict=True):
                waiting.settle(response, error)
        finally:
            self._slot_freed()

    @staticmethod
    def _settle_all(items: list[_Waiting], exc: BaseException) -> None:
        for waiting in items:
            waiting.settle(None, item_error(exc))

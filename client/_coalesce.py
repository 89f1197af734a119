"""Coalescing: concurrent calls of one process to one node travel as one Batch RPC.

A Python gRPC server spends most of a call's cost in gRPC itself (measured: a trivial
handler serves ~2,000 calls/s at 64 concurrent callers on 2 cores), so a web server whose
threads each call the store separately pays that cost per request, twice (client and
node). Per endpoint, at most `MAX_IN_FLIGHT` calls travel at once: a call that finds a free
slot goes at once, as its own RPC (a lone call pays nothing extra); calls that find none
queue, and when a slot frees, everything queued (up to `MAX_BATCH`) leaves as one
`Batch`. Batching is by what is waiting, never by a timer.

Each item keeps its own outcome: the node answers it exactly as the item's own RPC (same
status, message and trailers), and `ItemError` presents that answer as a `grpc.RpcError`,
so the retry loop classifies it like any other attempt. A whole batch that fails gives
each item the batch's status (a mutation's outcome is then as unknown as its own failed
RPC's would be). A node without the Batch RPC (UNIMPLEMENTED: an older release during a
rolling upgrade) turns coalescing off for that endpoint.

The pure parts (`batch_request`, `item_outcomes`, `item_error`, `batch_unsupported`,
`never_answered`) are shared with the asyncio coalescer in _async_coalesce.py, so a batch
is built and read one way; `Coalescer` below is the one for threads.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import grpc

from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

from ._routing import trailers

MAX_IN_FLIGHT = 2
MAX_BATCH = 256
# Kinds a batch item can carry (the oneof names in proto/sessionquorum.proto's BatchItem).
KINDS = frozenset({"validate", "create", "update", "touch", "rotate", "delete"})

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class _Metadatum(NamedTuple):
    key: str
    value: str


class ItemError(grpc.RpcError):
    """One batch item's failure, shaped like the RpcError its own call would have raised."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: dict[str, str]) -> None:
        super().__init__(details)
        self._code, self._details = code, details
        self._trailers = tuple(_Metadatum(k, v) for k, v in trailers.items())

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self._trailers

    @classmethod
    def of(cls, exc: grpc.RpcError) -> ItemError:
        """A copy of a whole batch's failure for one item (each waiting thread raises its own)."""
        return cls(exc.code(), exc.details() or "", trailers(exc))


def batch_request(items: Iterable[tuple[str, Any]]) -> pb.BatchRequest:
    """One Batch of (kind, request) items, in order (kind: a BatchItem field name)."""
    return pb.BatchRequest(items=[pb.BatchItem(**{kind: request}) for kind, request in items])


def item_outcomes(kinds: Sequence[str], answer: pb.BatchResponse) -> list[tuple[Any, ItemError | None]]:
    """Each item's (response, None) or (None, error), in the order of `kinds`."""
    outcomes: list[tuple[Any, ItemError | None]] = []
    for kind, result in zip(kinds, answer.results, strict=False):
        answered = result.WhichOneof("outcome")
        if answered == "error":
            e = result.error
            code = _CODES.get(e.code, grpc.StatusCode.UNKNOWN)
            outcomes.append((None, ItemError(code, e.message, dict(e.trailers))))
        elif answered == kind:
            outcomes.append((getattr(result, kind), None))
        else:
            outcomes.append(
                (None, ItemError(grpc.StatusCode.INTERNAL, f"batch answered {answered} to {kind}", {}))
            )
    for _ in kinds[len(outcomes) :]:
        outcomes.append((None, ItemError(grpc.StatusCode.INTERNAL, "the batch answer lacks this item", {})))
    return outcomes


def batch_unsupported(exc: BaseException) -> bool:
    """The node has no Batch RPC (an older release): coalescing is off for it."""
    return isinstance(exc, grpc.RpcError) and exc.code() is grpc.StatusCode.UNIMPLEMENTED


def item_error(exc: BaseException) -> ItemError:
    """A whole batch's failure as one item's own copy (each waiting caller raises its own)."""
    if isinstance(exc, grpc.RpcError):
        return ItemError.of(exc)
    return ItemError(grpc.StatusCode.UNKNOWN, str(exc), {})


def never_answered(queued: bool) -> ItemError:
    """The error of a queued call whose attempt timeout passed before its batch answered."""
    return ItemError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "no answer within the attempt timeout" + (" (never sent)" if queued else ""),
        {},
    )


class _Waiting:
    __slots__ = ("deadline", "direct", "done", "error", "kind", "request", "response")

    def __init__(self, kind: str, request: Any, deadline: float) -> None:
        self.kind, self.request, self.deadline = kind, request, deadline
        self.done = threading.Event()
        self.response: Any = None
        self.error: grpc.RpcError | None = None
        self.direct = False  # the node has no Batch: send it alone


class Coalescer:
    """One endpoint's slots and queue; thread-safe."""

    def __init__(self, stub: Callable[[], pb_grpc.SessionStoreStub]) -> None:
        self._stub = stub
        self._lock = threading.Lock()
        self._in_flight = 0
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._batch_unsupported = False
        self.batches_sent = 0  # tests and benchmarks read it

    def call(self, kind: str, request: Any, timeout_s: float, direct: Callable[[], Any]) -> Any:
        """`direct()` sends the call as its own RPC; it runs here when a slot is free."""
        with self._lock:
            alone = self._batch_unsupported or (self._in_flight < MAX_IN_FLIGHT and not self._queue)
            if alone:
                self._in_flight += 1
            else:
                waiting = _Waiting(kind, request, time.monotonic() + timeout_s)
                self._queue.append(waiting)
        if alone:
            try:
                return direct()
            finally:
                self._slot_freed()
        if not waiting.done.wait(timeout_s):
            with self._lock:
                queued = waiting in self._queue
                if queued:
                    self._queue.remove(waiting)
            raise never_answered(queued)
        if waiting.direct:
            return direct()
        if waiting.error is not None:
            raise waiting.error
        return waiting.response

    def _slot_freed(self) -> None:
        with self._lock:
            if not self._queue:
                self._in_flight -= 1
                return
            items = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
        self._send(items)  # the freed slot passes to the batch

    def _send(self, items: list[_Waiting]) -> None:
        request = batch_request((w.kind, w.request) for w in items)
        timeout_s = max(0.001, max(w.deadline for w in items) - time.monotonic())
        try:
            future = self._stub().Batch.future(request, timeout=timeout_s)
        except Exception as exc:  # a closed channel: each caller retries on its own
            self._settle_all(items, ItemError(grpc.StatusCode.CANCELLED, str(exc), {}))
            self._slot_freed()
            return
        self.batches_sent += 1
        future.add_done_callback(lambda f: self._on_done(f, items))

    def _on_done(self, future: Any, items: list[_Waiting]) -> None:
        """On a gRPC thread: hand each waiting caller its result, then use the slot again."""
        try:
            exc = future.exception()
            if exc is None:
                outcomes = item_outcomes([w.kind for w in items], future.result())
                for waiting, (response, error) in zip(items, outcomes, strict=True):
                    waiting.response, waiting.error = response, error
                    waiting.done.set()
            elif batch_unsupported(exc):
                self._batch_unsupported = True
                for waiting in items:
                    waiting.direct = True
                    waiting.done.set()
            else:
                self._settle_all(items, exc)
        finally:
            self._slot_freed()

    @staticmethod
    def _settle_all(items: list[_Waiting], exc: BaseException) -> None:
        for waiting in items:
            waiting.error = item_error(exc)
            waiting.done.set()

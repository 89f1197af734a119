"""The retry loop's driver for asyncio: RetryState's decisions, with awaits for waits.

`Caller` (_retry.py) drives `RetryState` with blocking calls and an Event wait; this one
awaits grpc.aio calls and sleeps with the loop. What a failed attempt means, where the next
one goes, when to give up and which error to raise are `RetryState`'s alone, and the
request ids come from the same `LanePool`, so both clients behave identically.

A backoff wakes at once when the client closes, as the sync driver's does. Cancelling the
calling task cancels the attempt in flight; a mutation's lane is then retired (the
attempt may still be applied), as after any other exception from outside the library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, TypeVar

import grpc
import grpc.aio

from ._async_coalesce import AsyncCoalescer
from ._calls import Call
from ._channels import AsyncChannelPool, ClientClosedError
from ._lanes import LanePool
from ._retry import Renewable, RetryState
from ._routing import Router

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class AsyncCaller:
    """Runs calls against the cluster from one event loop; shared by that loop's tasks."""

    def __init__(
        self, router: Router, channels: AsyncChannelPool, *, attempt_timeout_s: float, coalesce: bool = True
    ) -> None:
        self._router = router
        self._channels = channels
        self._lanes = LanePool()
        self._attempt_timeout_s = attempt_timeout_s
        self._coalesce = coalesce
        self._coalescers: dict[str, AsyncCoalescer] = {}
        # Binds to a loop only when first awaited (Python >= 3.10): safe to make outside one.
        self._closing = asyncio.Event()

    def close(self) -> None:
        self._closing.set()
        for coalescer in self._coalescers.values():
            coalescer.close()

    def reset_after_fork(self) -> None:
        """In a forked child: fresh request ids, no coalescer, a new closing event.

        The inherited coalescers hold futures of the parent's loop, and the event may be
        bound to that loop; neither runs in the child (see _fork.py).
        """
        self._lanes.reset_after_fork()
        self._coalescers = {}
        closing = asyncio.Event()
        if self._closing.is_set():
            closing.set()
        self._closing = closing

    async def run(self, call: Call[_T], timeout_s: float) -> _T:
        """Run `call` until a definite answer or the deadline; a mutation under a leased request id."""
        if not call.mutation:
            return call.read(await self._attempts(call, timeout_s, None))
        with self._lanes.lease(call.request) as lease:
            return call.read(await self._attempts(call, timeout_s, lease))

    async def _attempts(self, call: Call[Any], timeout_s: float, lease: Renewable[Any] | None) -> Any:
        state = RetryState(
            self._router,
            call,
            timeout_s=timeout_s,
            attempt_timeout_s=self._attempt_timeout_s,
            lease=lease,
            closing=self._closing.is_set,
        )
        while (attempt_s := state.next_attempt_s()) is not None:
            try:
                response = await self._attempt(call, state.endpoint, state.request, attempt_s)
            except ClientClosedError:
                if state.attempts == 0:
                    raise
                break
            except grpc.RpcError as exc:
                step = state.on_error(exc)
                if step.error is not None:
                    raise step.error from exc
                if step.pause_s > 0:
                    await self._pause(step.pause_s)
                continue
            state.succeeded()
            return response
        raise state.give_up() from state.last

    async def _pause(self, seconds: float) -> None:
        """Back off for `seconds`, or until the client closes."""
        if not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    async def _attempt(self, call: Call[Any], endpoint: str, request: Any, timeout_s: float) -> Any:
        rpc = getattr(self._channels.stub(endpoint), call.method)

        async def direct() -> Any:
            try:
                return await rpc(request, timeout=timeout_s)
            except grpc.aio.UsageError as exc:
                # grpc.aio refuses to start a call on a channel that close() shut a moment ago.
                if self._closing.is_set():
                    raise ClientClosedError("the AsyncSessionClient is closed") from exc
                raise

        if call.batch_kind is None or not self._coalesce:
            return await direct()
        return await self._coalescer(endpoint).call(call.batch_kind, request, timeout_s, direct)

    def _coalescer(self, endpoint: str) -> AsyncCoalescer:
        found = self._coalescers.get(endpoint)
        if found is None:
            found = self._coalescers[endpoint] = AsyncCoalescer(lambda: self._channels.stub(endpoint))
        return found

    @property
    def batches_sent(self) -> int:
        """How many Batch RPCs this caller's coalescers sent; for tests and benchmarks."""
        return sum(c.batches_sent for c in self._coalescers.values())

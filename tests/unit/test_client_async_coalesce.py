"""The asyncio coalescer (client/_async_coalesce.py) against a fake stub whose batches the test ends."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from sessionquorum.client._async_coalesce import AsyncCoalescer
from sessionquorum.client._coalesce import MAX_IN_FLIGHT, ItemError
from sessionquorum.proto import sessionquorum_pb2 as pb
from tests.aio import run_async
from tests.unit.test_client_coalesce import FakeRpcError


class FakeStub:
    """`Batch(request, timeout=...)` returns an awaitable the test finishes."""

    def __init__(self) -> None:
        self.sent: list[tuple[pb.BatchRequest, asyncio.Future[pb.BatchResponse]]] = []
        self.Batch = self

    def __call__(self, request: pb.BatchRequest, timeout: float) -> asyncio.Future[pb.BatchResponse]:
        answer: asyncio.Future[pb.BatchResponse] = asyncio.get_running_loop().create_future()
        self.sent.append((request, answer))
        return answer


def _validate(n: int) -> pb.ValidateRequest:
    return pb.ValidateRequest(token_hash=bytes([n]) * 32)


async def _hold_slots(coalescer: AsyncCoalescer) -> tuple[list[asyncio.Event], list[asyncio.Task[Any]]]:
    """Occupy every slot with a direct call that ends when the test sets its event."""
    releases = [asyncio.Event() for _ in range(MAX_IN_FLIGHT)]
    tasks = []
    for release in releases:

        async def direct(release: asyncio.Event = release) -> pb.ValidateResponse:
            await release.wait()
            return pb.ValidateResponse()

        tasks.append(asyncio.create_task(coalescer.call("validate", _validate(0), 5.0, direct)))
    await asyncio.sleep(0)  # every holder takes its slot
    return releases, tasks


async def _never() -> Any:
    raise AssertionError("a queued call must not go alone while Batch works")


async def _until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def test_queued_calls_leave_together_when_a_slot_frees_and_each_gets_its_own_answer() -> None:
    async def main() -> None:
        stub = FakeStub()
        coalescer = AsyncCoalescer(lambda: stub)  # type: ignore[arg-type, return-value]
        releases, holders = await _hold_slots(coalescer)
        queued = [
            asyncio.create_task(coalescer.call("validate", _validate(n), 5.0, _never)) for n in (1, 2, 3)
        ]
        await asyncio.sleep(0)
        assert stub.sent == []  # no timer: nothing leaves while every slot is taken

        releases[0].set()
        await _until(lambda: stub.sent)
        request, answer = stub.sent[0]
        assert [item.validate.token_hash[0] for item in request.items] == [1, 2, 3]
        answer.set_result(
            pb.BatchResponse(
                results=[
                    pb.BatchResult(validate=pb.ValidateResponse(session=pb.Session(handle="h1"))),
                    pb.BatchResult(
                        error=pb.ItemError(code=5, message="no such session", trailers={"sq-node": "n1"})
                    ),
                ]
            )
        )
        first = await queued[0]
        assert first.session.handle == "h1"
        with pytest.raises(ItemError) as missing:
            await queued[1]
        assert (missing.value.code(), missing.value.details()) == (
            grpc.StatusCode.NOT_FOUND,
            "no such session",
        )
        assert list(missing.value.trailing_metadata()) == [("sq-node", "n1")]
        with pytest.raises(ItemError, match="lacks this item"):
            await queued[2]
        assert coalescer.batches_sent == 1
        releases[1].set()
        await asyncio.gather(*holders)

    run_async(main())


def test_unimplemented_batch_sends_the_queued_calls_alone_and_stops_coalescing() -> None:
    async def main() -> None:
        stub = FakeStub()
        coalescer = AsyncCoalescer(lambda: stub)  # type: ignore[arg-type, return-value]
        releases, holders = await _hold_slots(coalescer)

        async def direct() -> str:
            return "alone"

        queued = asyncio.create_task(coalescer.call("touch", pb.TouchRequest(), 5.0, direct))
        await asyncio.sleep(0)
        releases[0].set()
        await _until(lambda: stub.sent)
        stub.sent[0][1].set_exception(FakeRpcError(grpc.StatusCode.UNIMPLEMENTED))
        assert await queued == "alone"
        # From now on every call goes alone, even with every slot taken.
        assert await coalescer.call("touch", pb.TouchRequest(), 5.0, direct) == "alone"
        releases[1].set()
        await asyncio.gather(*holders)
        assert len(stub.sent) == 1

    run_async(main())


def test_a_failed_batch_fails_each_item_with_its_own_copy_of_the_status() -> None:
    async def main() -> None:
        stub = FakeStub()
        coalescer = AsyncCoalescer(lambda: stub)  # type: ignore[arg-type, return-value]
        releases, holders = await _hold_slots(coalescer)
        queued = [
            asyncio.create_task(coalescer.call("touch", pb.TouchRequest(), 5.0, _never)) for _ in range(2)
        ]
        await asyncio.sleep(0)
        releases[0].set()
        await _until(lambda: stub.sent)
        stub.sent[0][1].set_exception(FakeRpcError(grpc.StatusCode.UNAVAILABLE))
        errors = await asyncio.gather(*queued, return_exceptions=True)
        assert all(isinstance(e, ItemError) and e.code() is grpc.StatusCode.UNAVAILABLE for e in errors)
        assert errors[0] is not errors[1]
        releases[1].set()
        await asyncio.gather(*holders)

    run_async(main())


def test_queued_call_past_its_timeout_fails_as_never_sent_and_leaves_the_queue() -> None:
    async def main() -> None:
        stub = FakeStub()
        coalescer = AsyncCoalescer(lambda: stub)  # type: ignore[arg-type, return-value]
        releases, holders = await _hold_slots(coalescer)
        with pytest.raises(ItemError, match="never sent") as info:
            await coalescer.call("validate", _validate(1), 0.05, _never)
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        cancelled = asyncio.create_task(coalescer.call("validate", _validate(2), 5.0, _never))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        for release in releases:
            release.set()
        await asyncio.gather(*holders)
        assert stub.sent == []  # neither the expired nor the cancelled call was sent

    run_async(main())

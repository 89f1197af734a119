"""The client's coalescing (client/_coalesce.py) against a fake stub whose calls the test ends."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from sessionquorum.client._coalesce import MAX_IN_FLIGHT, Coalescer, ItemError
from sessionquorum.proto import sessionquorum_pb2 as pb


class FakeFuture:
    def __init__(self, request: pb.BatchRequest) -> None:
        self.request = request
        self._callbacks: list[Callable[[Any], None]] = []
        self._result: pb.BatchResponse | None = None
        self._exc: BaseException | None = None

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._callbacks.append(fn)

    def finish(self, result: pb.BatchResponse | None = None, exc: BaseException | None = None) -> None:
        self._result, self._exc = result, exc
        for fn in self._callbacks:
            fn(self)

    def exception(self) -> BaseException | None:
        return self._exc

    def result(self) -> pb.BatchResponse:
        assert self._result is not None
        return self._result


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "fake"

    def trailing_metadata(self) -> tuple[Any, ...]:
        return ()


class FakeStub:
    def __init__(self) -> None:
        self.sent: list[FakeFuture] = []
        self.Batch = self

    def future(self, request: pb.BatchRequest, timeout: float) -> FakeFuture:
        f = FakeFuture(request)
        self.sent.append(f)
        return f


def _validate(n: int) -> pb.ValidateRequest:
    return pb.ValidateRequest(token_hash=bytes([n]) * 32)


def _hold_slots(coalescer: Coalescer) -> list[threading.Event]:
    """Occupy every slot with a direct call that ends when the test sets its event."""
    releases = []
    started = threading.Barrier(MAX_IN_FLIGHT + 1)
    for _ in range(MAX_IN_FLIGHT):
        release = threading.Event()
        releases.append(release)

        def direct(release: threading.Event = release) -> pb.ValidateResponse:
            started.wait(5)
            release.wait(5)
            return pb.ValidateResponse()

        threading.Thread(target=coalescer.call, args=("validate", _validate(0), 5.0, direct)).start()
    started.wait(5)
    return releases


def _queued_calls(coalescer: Coalescer, n: int) -> tuple[list[Any], list[threading.Thread]]:
    out: list[Any] = [None] * n

    def one(i: int) -> None:
        try:
            out[i] = coalescer.call("validate", _validate(i + 1), 5.0, lambda: "direct")
        except grpc.RpcError as exc:
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return out, threads


def _wait_queued(coalescer: Coalescer, n: int) -> None:
    for _ in range(500):
        if len(coalescer._queue) == n:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{len(coalescer._queue)} queued, expected {n}")


def test_a_lone_call_goes_alone_and_sends_no_batch() -> None:
    stub = FakeStub()
    coalescer = Coalescer(lambda: stub)  # type: ignore[arg-type, return-value]
    assert coalescer.call("validate", _validate(1), 1.0, lambda: "direct") == "direct"
    assert stub.sent == [] and coalescer.batches_sent == 0


def test_calls_waiting_for_a_slot_leave_together_and_get_their_own_results() -> None:
    stub = FakeStub()
    coalescer = Coalescer(lambda: stub)  # type: ignore[arg-type, return-value]
    releases = _hold_slots(coalescer)
    out, threads = _queued_calls(coalescer, 5)
    _wait_queued(coalescer, 5)
    releases[0].set()  # a slot frees: the five queued calls leave as one batch
    for _ in range(500):
        if stub.sent:
            break
        threading.Event().wait(0.01)
    (batch,) = stub.sent
    assert [item.validate.token_hash[0] for item in batch.request.items] == [1, 2, 3, 4, 5]
    results = [
        pb.BatchResult(
            validate=pb.ValidateResponse(session=pb.Session(handle=f"h{i.validate.token_hash[0]}"))
        )
        for i in batch.request.items
    ]
    results[2] = pb.BatchResult(
        error=pb.ItemError(
            code=grpc.StatusCode.NOT_FOUND.value[0], message="gone", trailers={"sq-node": "n1"}
        )
    )
    batch.finish(pb.BatchResponse(results=results))
    releases[1].set()
    for t in threads:
        t.join(5)
    by_hash = {i: out[i] for i in range(5)}
    assert by_hash[0].session.handle == "h1" and by_hash[4].session.handle == "h5"
    assert isinstance(by_hash[2], ItemError) and by_hash[2].code() is grpc.StatusCode.NOT_FOUND
    assert [(m.key, m.value) for m in by_hash[2].trailing_metadata()] == [("sq-node", "n1")]
    assert coalescer.batches_sent == 1


@pytest.mark.parametrize(
    ("code", "expect_direct"), [(grpc.StatusCode.UNAVAILABLE, False), (grpc.StatusCode.UNIMPLEMENTED, True)]
)
def test_a_failed_batch_fails_each_item_alike_and_unimplemented_turns_coalescing_off(
    code: grpc.StatusCode, expect_direct: bool
) -> None:
    stub = FakeStub()
    coalescer = Coalescer(lambda: stub)  # type: ignore[arg-type, return-value]
    releases = _hold_slots(coalescer)
    out, threads = _queued_calls(coalescer, 3)
    _wait_queued(coalescer, 3)
    releases[0].set()
    for _ in range(500):
        if stub.sent:
            break
        threading.Event().wait(0.01)
    stub.sent[0].finish(exc=FakeRpcError(code))
    releases[1].set()
    for t in threads:
        t.join(5)
    if expect_direct:
        # An older node without Batch: each call was sent again on its own.
        assert out == ["direct"] * 3
        assert coalescer.call("validate", _validate(9), 1.0, lambda: "direct") == "direct"
    else:
        assert all(isinstance(o, ItemError) and o.code() is code for o in out)
        assert len({id(o) for o in out}) == 3  # each thread raises its own copy

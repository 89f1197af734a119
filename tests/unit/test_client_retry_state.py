"""RetryState, the retry loop's decisions both drivers share, without a network or a clock."""

from __future__ import annotations

from typing import Any

import grpc

from sessionquorum.client import OutcomeUnknown, Unavailable
from sessionquorum.client import _calls as calls
from sessionquorum.client._lanes import LanePool
from sessionquorum.client._retry import BACKOFF_BASE_S, Renewable, RetryState
from sessionquorum.client._routing import Router
from tests.unit.test_client_errors import FakeRpcError

Code = grpc.StatusCode


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _state(
    call: calls.Call[Any], clock: Clock, *, lease: Renewable[Any] | None = None, closing: bool = False
) -> RetryState:
    return RetryState(
        Router(["a:1", "b:1", "c:1"]),
        call,
        timeout_s=2.0,
        attempt_timeout_s=0.5,
        lease=lease,
        closing=lambda: closing,
        clock=clock,
    )


def test_redirect_with_hint_goes_there_at_once_and_next_backs_off_elsewhere() -> None:
    clock = Clock()
    state = _state(calls.touch("t"), clock)
    assert (state.endpoint, state.next_attempt_s()) == ("a:1", 0.5)

    step = state.on_error(FakeRpcError(Code.FAILED_PRECONDITION, sq_node="n1", sq_leader="c:1"))
    assert (step.error, step.pause_s, state.endpoint) == (None, 0.0, "c:1")

    step = state.on_error(FakeRpcError(Code.UNAVAILABLE, sq_node="n3"))
    assert step.error is None and 0.0 <= step.pause_s <= BACKOFF_BASE_S
    assert state.endpoint == "a:1"


def test_mutation_out_of_time_after_a_maybe_applied_attempt_gives_outcome_unknown_with_its_token() -> None:
    clock = Clock()
    call = calls.create(None, None, 60.0, 600.0)
    state = _state(call, clock)
    clock.now += 2.5
    step = state.on_error(FakeRpcError(Code.UNKNOWN, "commit timed out", sq_node="n1"))
    assert isinstance(step.error, OutcomeUnknown)
    assert step.error.token == call.token
    assert state.next_attempt_s() is None


def test_first_refusal_as_forgotten_renews_the_request_and_a_second_gives_unavailable() -> None:
    clock = Clock()
    call = calls.update("t", {"k": b"v"}, None, None, None)
    with LanePool().lease(call.request) as lease:
        state = _state(call, clock, lease=lease)
        refused = state.request.request_id.client_id
        step = state.on_error(FakeRpcError(Code.UNKNOWN, sq_node="n1", sq_epoch="7"))
        assert (step.error, step.pause_s) == (None, 0.0)
        assert state.request.request_id.client_id != refused
        assert state.request.request_id.client_epoch_ms == 7
        step = state.on_error(FakeRpcError(Code.UNKNOWN, sq_node="n1", sq_epoch="7"))
    assert isinstance(step.error, Unavailable)
    assert "nothing was applied" in step.error.message


def test_closing_stops_the_loop_after_the_first_attempt_and_says_so() -> None:
    clock = Clock()
    state = _state(calls.validate("t", False, False, reads_anywhere=False), clock, closing=True)
    assert state.next_attempt_s() == 0.5  # the first attempt always goes
    state.on_error(FakeRpcError(Code.UNAVAILABLE))
    assert state.next_attempt_s() is None
    error = state.give_up()
    assert isinstance(error, Unavailable) and "closed" in error.message

"""Request-id lanes, the leader guess and backoff, without a network."""

from __future__ import annotations

import grpc
import pytest

from sessionquorum.client import NotFound, OutcomeUnknown, StaleRequest, Unavailable
from sessionquorum.client._lanes import LanePool
from sessionquorum.client._retry import BACKOFF_BASE_S, BACKOFF_MAX_S, backoff_delay_s
from sessionquorum.client._routing import MAX_ENDPOINTS, Router


def test_two_concurrent_calls_get_different_client_ids() -> None:
    pool = LanePool()
    with pool.lease() as first, pool.lease() as second:
        assert first.client_id != second.client_id
        assert len(first.client_id) == len(second.client_id) == 16
        assert first.sequence == second.sequence == 1
    assert pool.created == 2


def test_finished_call_returns_lane_with_next_sequence() -> None:
    pool = LanePool()
    with pool.lease() as first:
        pass
    with pool.lease() as second:
        pass
    assert second.client_id == first.client_id
    assert (first.sequence, second.sequence) == (1, 2)
    assert pool.created == 1


@pytest.mark.parametrize("error", [NotFound, Unavailable])
def test_definite_failure_keeps_lane_and_still_advances_sequence(error: type[Exception]) -> None:
    pool = LanePool()
    with pytest.raises(error), pool.lease() as first:
        raise error("x", grpc.StatusCode.NOT_FOUND)
    with pool.lease() as second:
        pass
    assert (second.client_id, second.sequence) == (first.client_id, 2)


@pytest.mark.parametrize("error", [OutcomeUnknown, StaleRequest, KeyboardInterrupt])
def test_call_without_definite_answer_retires_its_client_id(error: type[BaseException]) -> None:
    pool = LanePool()
    with pytest.raises(error), pool.lease() as first:
        raise error("x", grpc.StatusCode.UNKNOWN) if issubclass(error, Exception) else error()
    with pool.lease() as second:
        pass
    assert second.client_id != first.client_id
    assert second.sequence == 1


def test_router_starts_at_first_endpoint_and_deduplicates() -> None:
    router = Router(["a:1", "b:1", "a:1"])
    assert router.endpoints == ("a:1", "b:1")
    assert router.leader() == "a:1"


@pytest.mark.parametrize("endpoints", [[], ["a:1", ""]])
def test_router_refuses_empty_endpoints(endpoints: list[str]) -> None:
    with pytest.raises(ValueError):
        Router(endpoints)


def test_router_refuses_a_single_string() -> None:
    with pytest.raises(TypeError):
        Router("a:1")


def test_router_failure_moves_guess_round_robin() -> None:
    router = Router(["a:1", "b:1", "c:1"])
    assert router.after_failure("a:1") == "b:1"
    assert router.after_failure("b:1") == "c:1"
    assert router.after_failure("c:1") == "a:1"


def test_router_failure_of_stale_endpoint_keeps_newer_guess() -> None:
    router = Router(["a:1", "b:1", "c:1"])
    router.follow_hint("c:1")
    assert router.after_failure("a:1") == "c:1"
    assert router.leader() == "c:1"


def test_router_hint_adds_unknown_endpoint_up_to_a_bound() -> None:
    router = Router(["a:1"])
    assert router.follow_hint("z:9") == "z:9"
    assert router.endpoints == ("a:1", "z:9")
    for i in range(2 * MAX_ENDPOINTS):
        router.follow_hint(f"h{i}:1")
    assert len(router.endpoints) == MAX_ENDPOINTS


def test_backoff_stays_within_full_jitter_bounds() -> None:
    assert all(0.0 <= backoff_delay_s(0) <= BACKOFF_BASE_S for _ in range(200))
    assert all(0.0 <= backoff_delay_s(50) <= BACKOFF_MAX_S for _ in range(200))

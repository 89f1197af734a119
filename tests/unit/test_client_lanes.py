"""Request-id lanes, the leader guess and backoff, without a network."""

from __future__ import annotations

import grpc
import pytest

from sessionquorum.client import NotFound, OutcomeUnknown, StaleRequest, Unavailable
from sessionquorum.client._lanes import LanePool
from sessionquorum.client._retry import BACKOFF_BASE_S, BACKOFF_MAX_S, backoff_delay_s
from sessionquorum.client._routing import MAX_ENDPOINTS, Router
from sessionquorum.proto import sessionquorum_pb2 as pb


def _touch() -> pb.TouchRequest:
    return pb.TouchRequest(token_hash=b"h" * 32)


def test_two_concurrent_calls_get_different_client_ids() -> None:
    pool = LanePool()
    with pool.lease(_touch()) as first, pool.lease(_touch()) as second:
        assert first.request_id.client_id != second.request_id.client_id
        assert len(first.request_id.client_id) == len(second.request_id.client_id) == 16
        assert first.request_id.sequence == second.request_id.sequence == 1
    assert pool.created == 2


def test_finished_call_returns_lane_with_next_sequence() -> None:
    pool = LanePool()
    with pool.lease(_touch()) as first:
        pass
    with pool.lease(_touch()) as second:
        pass
    assert second.request_id.client_id == first.request_id.client_id
    assert (first.request_id.sequence, second.request_id.sequence) == (1, 2)
    assert pool.created == 1


def test_lease_stamps_the_request_it_was_given() -> None:
    request = _touch()
    with LanePool().lease(request) as lease:
        assert lease.request is request
        assert request.request_id.sequence == 1


@pytest.mark.parametrize("error", [NotFound, Unavailable])
def test_definite_failure_keeps_lane_and_still_advances_sequence(error: type[Exception]) -> None:
    pool = LanePool()
    with pytest.raises(error), pool.lease(_touch()) as first:
        raise error("x", grpc.StatusCode.NOT_FOUND)
    with pool.lease(_touch()) as second:
        pass
    assert (second.request_id.client_id, second.request_id.sequence) == (first.request_id.client_id, 2)


@pytest.mark.parametrize("error", [OutcomeUnknown, StaleRequest, KeyboardInterrupt])
def test_call_without_definite_answer_retires_its_client_id(error: type[BaseException]) -> None:
    pool = LanePool()
    with pytest.raises(error), pool.lease(_touch()) as first:
        raise error("x", grpc.StatusCode.UNKNOWN) if issubclass(error, Exception) else error()
    with pool.lease(_touch()) as second:
        pass
    assert second.request_id.client_id != first.request_id.client_id
    assert second.request_id.sequence == 1


# -- epochs: a client id carries the cluster time learned before its first use ------------------


def test_lanes_before_any_learned_time_carry_epoch_zero() -> None:
    with LanePool().lease(_touch()) as lease:
        assert lease.request_id.client_epoch_ms == 0


def test_new_lane_takes_latest_learned_epoch_and_old_lane_keeps_its_own() -> None:
    pool = LanePool()
    with pool.lease(_touch()):
        pass
    pool.learn_epoch(5_000)
    pool.learn_epoch(4_000)  # an older time learned late never moves the epoch back
    with pool.lease(_touch()) as reused, pool.lease(_touch()) as fresh:
        assert (reused.request_id.sequence, reused.request_id.client_epoch_ms) == (2, 0)
        assert (fresh.request_id.sequence, fresh.request_id.client_epoch_ms) == (1, 5_000)
    assert pool.epoch_ms == 5_000


def test_renew_moves_call_to_new_client_id_with_learned_epoch_in_a_copy() -> None:
    pool = LanePool()
    original = _touch()
    with pool.lease(original) as lease:
        first_id = pb.RequestId()
        first_id.CopyFrom(lease.request_id)
        lease.forgotten(7_000)
        resent = lease.renew()
    assert resent is not original
    assert original.request_id == first_id
    assert resent.token_hash == original.token_hash
    assert resent.request_id.client_id != first_id.client_id
    assert (resent.request_id.sequence, resent.request_id.client_epoch_ms) == (1, 7_000)
    assert lease.renewed


def test_renewed_call_keeps_its_new_lane_and_never_reuses_the_forgotten_one() -> None:
    pool = LanePool()
    with pool.lease(_touch()) as lease:
        forgotten_id = lease.request_id.client_id
        lease.forgotten(7_000)
        new_id = lease.renew().request_id.client_id
    with pool.lease(_touch()) as later, pool.lease(_touch()) as other:
        used = {later.request_id.client_id, other.request_id.client_id}
    assert new_id in used
    assert forgotten_id not in used


def test_forgotten_lane_is_retired_even_when_call_ends_with_definite_error() -> None:
    pool = LanePool()
    with pytest.raises(Unavailable), pool.lease(_touch()) as lease:
        forgotten_id = lease.request_id.client_id
        lease.forgotten(None)
        raise Unavailable("refused again", grpc.StatusCode.UNKNOWN)
    with pool.lease(_touch()) as later:
        assert later.request_id.client_id != forgotten_id


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

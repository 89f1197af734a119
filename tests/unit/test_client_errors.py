"""The status -> error table and the per-attempt classification, without a network."""

from __future__ import annotations

from collections import namedtuple

import grpc
import pytest

from sessionquorum.client import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    OutcomeUnknown,
    PermissionDenied,
    QuotaExceeded,
    SessionQuorumError,
    StaleRequest,
    Unavailable,
    VersionConflict,
)
from sessionquorum.client._errors import error_for_status
from sessionquorum.client._routing import Action, classify

Code = grpc.StatusCode
# grpc hands trailing metadata out as named tuples with these fields.
Metadatum = namedtuple("Metadatum", ["key", "value"])


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "details", **metadata: str) -> None:
        super().__init__(code.name)
        self._code = code
        self._details = details
        self._metadata = tuple(Metadatum(k.replace("_", "-"), v) for k, v in metadata.items())

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[Metadatum, ...]:  # type: ignore[override]
        return self._metadata


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (Code.INVALID_ARGUMENT, InvalidArgument),
        (Code.NOT_FOUND, NotFound),
        (Code.ALREADY_EXISTS, AlreadyExists),
        (Code.ABORTED, VersionConflict),
        (Code.RESOURCE_EXHAUSTED, QuotaExceeded),
        (Code.OUT_OF_RANGE, StaleRequest),
        (Code.PERMISSION_DENIED, PermissionDenied),
        (Code.UNAUTHENTICATED, PermissionDenied),
        (Code.INTERNAL, SessionQuorumError),
        (Code.UNIMPLEMENTED, SessionQuorumError),
    ],
)
def test_definite_status_maps_to_its_error_and_keeps_server_message(
    code: grpc.StatusCode, error: type[SessionQuorumError]
) -> None:
    translated = error_for_status(code, "session 3 is at version 7")
    assert type(translated) is error
    assert translated.code is code
    assert translated.message == "session 3 is at version 7"
    assert str(translated) == "session 3 is at version 7"


@pytest.mark.parametrize(
    "code", [Code.UNAVAILABLE, Code.UNKNOWN, Code.DEADLINE_EXCEEDED, Code.FAILED_PRECONDITION, Code.CANCELLED]
)
def test_transient_status_is_outcome_unknown_only_when_maybe_applied(code: grpc.StatusCode) -> None:
    assert type(error_for_status(code, "x", maybe_applied=False)) is Unavailable
    assert type(error_for_status(code, "x", maybe_applied=True)) is OutcomeUnknown


def test_outcome_unknown_stands_for_unknown_whatever_the_last_status() -> None:
    assert error_for_status(Code.UNAVAILABLE, "x", maybe_applied=True).code is Code.UNKNOWN


def test_version_conflict_carries_current_version_from_trailer() -> None:
    error = error_for_status(Code.ABORTED, "expected 3", trailers={"sq-version": "7"})
    assert isinstance(error, VersionConflict)
    assert error.current_version == 7


@pytest.mark.parametrize("trailers", [None, {}, {"sq-version": "seven"}])
def test_version_conflict_without_usable_trailer_has_no_current_version(
    trailers: dict[str, str] | None,
) -> None:
    error = error_for_status(Code.ABORTED, "expected 3", trailers=trailers)
    assert isinstance(error, VersionConflict)
    assert error.current_version is None


def test_outcome_unknown_has_no_token_until_create_or_rotate_sets_it() -> None:
    error = error_for_status(Code.UNKNOWN, "x", maybe_applied=True)
    assert isinstance(error, OutcomeUnknown)
    assert error.token is None


def test_definite_status_ignores_maybe_applied() -> None:
    assert type(error_for_status(Code.NOT_FOUND, "gone", maybe_applied=True)) is NotFound


def test_empty_details_still_give_a_message() -> None:
    assert error_for_status(Code.NOT_FOUND, None).message == "status NOT_FOUND"


def test_not_leader_with_hint_redirects_to_the_hint() -> None:
    verdict = classify(
        FakeRpcError(Code.FAILED_PRECONDITION, sq_node="n2", sq_leader="10.0.0.1:1"), mutation=True
    )
    assert (verdict.action, verdict.leader_hint, verdict.maybe_applied) == (
        Action.REDIRECT,
        "10.0.0.1:1",
        False,
    )


def test_a_command_the_cluster_cannot_run_until_its_upgrade_ends_is_answered_not_retried() -> None:
    # Same status as "not the leader"; the sq-upgrade trailer tells them apart, so the client
    # stops at once instead of redirecting until its deadline (seen: 48 attempts in 10 s).
    verdict = classify(
        FakeRpcError(Code.FAILED_PRECONDITION, sq_node="n2", sq_upgrade="pending"), mutation=True
    )
    assert (verdict.action, verdict.maybe_applied) == (Action.ANSWER, False)
    assert (
        classify(FakeRpcError(Code.FAILED_PRECONDITION, sq_node="n2"), mutation=True).action
        is Action.REDIRECT
    )


def test_not_leader_with_empty_hint_has_no_hint() -> None:
    verdict = classify(FakeRpcError(Code.FAILED_PRECONDITION, sq_node="n2", sq_leader=""), mutation=True)
    assert verdict.leader_hint is None


def test_unavailable_from_a_node_means_nothing_applied() -> None:
    verdict = classify(FakeRpcError(Code.UNAVAILABLE, sq_node="n1"), mutation=True)
    assert (verdict.action, verdict.maybe_applied, verdict.node) == (Action.NEXT, False, "n1")


def test_unavailable_without_node_marker_may_have_applied_a_mutation() -> None:
    verdict = classify(FakeRpcError(Code.UNAVAILABLE), mutation=True)
    assert (verdict.action, verdict.maybe_applied) == (Action.NEXT, True)


def test_unknown_outcome_retries_same_node_and_may_have_applied() -> None:
    verdict = classify(FakeRpcError(Code.UNKNOWN, sq_node="n1"), mutation=True)
    assert (verdict.action, verdict.maybe_applied) == (Action.SAME, True)


def test_dedup_expired_refusal_is_its_own_verdict_with_the_cluster_time() -> None:
    refusal = FakeRpcError(
        Code.UNKNOWN, "outcome unknown (deduplication state expired): ...", sq_node="n1", sq_epoch="123456"
    )
    verdict = classify(refusal, mutation=True)
    assert (verdict.action, verdict.maybe_applied, verdict.epoch_ms) == (Action.EXPIRED, False, 123456)


def test_dedup_expired_refusal_is_recognised_by_its_message_without_trailer() -> None:
    refusal = FakeRpcError(Code.UNKNOWN, "outcome unknown (deduplication state expired): ...", sq_node="n1")
    verdict = classify(refusal, mutation=True)
    assert (verdict.action, verdict.epoch_ms) == (Action.EXPIRED, None)


@pytest.mark.parametrize("epoch", ["soon", "-5"])
def test_dedup_expired_refusal_with_malformed_epoch_has_no_epoch(epoch: str) -> None:
    verdict = classify(FakeRpcError(Code.UNKNOWN, sq_node="n1", sq_epoch=epoch), mutation=True)
    assert (verdict.action, verdict.epoch_ms) == (Action.EXPIRED, None)


def test_plain_unknown_without_epoch_is_retried_with_the_same_id() -> None:
    verdict = classify(FakeRpcError(Code.UNKNOWN, "commit timed out", sq_node="n1"), mutation=True)
    assert verdict.action is Action.SAME


def test_attempt_deadline_moves_on_and_may_have_applied() -> None:
    verdict = classify(FakeRpcError(Code.DEADLINE_EXCEEDED), mutation=True)
    assert (verdict.action, verdict.maybe_applied) == (Action.NEXT, True)


@pytest.mark.parametrize("code", [Code.UNAVAILABLE, Code.UNKNOWN, Code.DEADLINE_EXCEEDED, Code.CANCELLED])
def test_reads_are_never_maybe_applied(code: grpc.StatusCode) -> None:
    assert classify(FakeRpcError(code), mutation=False).maybe_applied is False


@pytest.mark.parametrize("code", [Code.NOT_FOUND, Code.ABORTED, Code.PERMISSION_DENIED, Code.INTERNAL])
def test_definite_statuses_are_answers(code: grpc.StatusCode) -> None:
    assert classify(FakeRpcError(code, sq_node="n1"), mutation=True).action is Action.ANSWER

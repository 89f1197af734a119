"""Stricter rules for new requests (validation.check_request_*): the service runs them, apply never.

Apply must keep accepting what an older release logged (replicas of different versions
replaying the same log must agree), so the last test drives apply with what the service
now refuses.
"""

from __future__ import annotations

import hashlib

import pytest

from sessionquorum.store import validation
from sessionquorum.store.commands import Command, Create, Rotate, encode
from sessionquorum.store.config import Limits
from sessionquorum.store.replies import Code
from sessionquorum.store.state import SessionMachine

LIMITS = Limits()
MIN_IDLE = validation.MIN_IDLE_TIMEOUT_MS


@pytest.mark.parametrize(("idle_ms", "absolute_ms"), [(1, 1), (1, 60_000), (MIN_IDLE - 1, MIN_IDLE - 1)])
def test_idle_timeout_below_the_minimum_is_invalid_for_new_requests(idle_ms: int, absolute_ms: int) -> None:
    assert validation.check_timeouts(idle_ms, absolute_ms, LIMITS) is None  # what apply accepts
    assert validation.check_request_timeouts(idle_ms, absolute_ms, LIMITS) == (
        Code.INVALID,
        f"idle_timeout_ms must be >= {MIN_IDLE}, got {idle_ms}",
    )


def test_idle_timeout_at_the_minimum_is_accepted_for_new_requests() -> None:
    assert validation.check_request_timeouts(MIN_IDLE, MIN_IDLE, LIMITS) is None


@pytest.mark.parametrize(
    ("idle_ms", "absolute_ms", "fragment"),
    [(0, 1_000, "must be > 0"), (2_000, 1_999, "must not be shorter"), (MIN_IDLE - 1, 0, "must be > 0")],
)
def test_request_timeouts_report_the_shared_problem_first(
    idle_ms: int, absolute_ms: int, fragment: str
) -> None:
    problem = validation.check_request_timeouts(idle_ms, absolute_ms, LIMITS)
    assert problem is not None
    assert problem[0] is Code.INVALID
    assert fragment in problem[1]


@pytest.mark.parametrize("byte", [0x00, 0xFF, 0x5A])
def test_token_hash_of_one_repeated_byte_is_invalid_for_new_requests(byte: int) -> None:
    value = bytes([byte]) * 32
    assert validation.check_token_hash(value) is None  # what apply accepts
    assert validation.check_request_token_hash(value, "new_token_hash") == (
        Code.INVALID,
        f"new_token_hash is one byte value (0x{byte:02x}) repeated: not the SHA-256 of a token",
    )


def test_token_hash_with_two_byte_values_is_accepted_and_wrong_length_reported_as_before() -> None:
    assert validation.check_request_token_hash(b"\x00" * 31 + b"\x01") is None
    assert validation.check_request_token_hash(hashlib.sha256(b"t").digest()) is None
    assert validation.check_request_token_hash(b"") == validation.check_token_hash(b"")
    assert validation.check_request_token_hash(b"\x00" * 31) == validation.check_token_hash(b"\x00" * 31)


def test_apply_still_accepts_what_only_the_service_refuses() -> None:
    m = SessionMachine(Limits())
    zero, ones = b"\x00" * 32, b"\xff" * 32
    create = Create(
        token_hash=zero, handle="h1", principal=None, attributes=(), idle_timeout_ms=1, absolute_timeout_ms=1
    )
    assert m.apply(encode(Command(create, now_ms=10))).code is Code.OK
    assert m.apply(encode(Command(Rotate(zero, ones, None), now_ms=10))).code is Code.OK
    assert m.read(ones, 10).code is Code.OK

"""Stateless checks of request shape against the configured limits.

Called twice with the same code: by the gRPC service before proposing (so bad input costs
no log entry and gets its error at once) and by the state machine at apply (so the state's
invariants hold whatever a proposer sends). Each check returns None or a Problem: the
outcome code (INVALID for a malformed request, QUOTA for a size limit) and a message that
names what was wrong.

The `check_request_*` functions at the end are stricter rules for new requests, run by the
service only (apply must keep accepting what older releases logged).
"""

from __future__ import annotations

from collections.abc import Iterable

from .config import Limits
from .replies import Code

Problem = tuple[Code, str]


def _invalid(message: str) -> Problem:
    return (Code.INVALID, message)


def _quota(message: str) -> Problem:
    return (Code.QUOTA, message)


TOKEN_HASH_BYTES = 32


def check_token_hash(value: bytes, field: str = "token_hash") -> Problem | None:
    if len(value) != TOKEN_HASH_BYTES:
        return _invalid(
            f"{field} must be the {TOKEN_HASH_BYTES}-byte SHA-256 of the token, got {len(value)} bytes"
        )
    return None


def check_principal(value: str, limits: Limits) -> Problem | None:
    size = len(value.encode("utf-8"))
    if size == 0:
        return _invalid("principal must not be empty")
    if size > limits.max_principal_bytes:
        return _quota(f"principal is {size} bytes, the limit is {limits.max_principal_bytes}")
    return None


def check_handle(value: str, limits: Limits) -> Problem | None:
    if not value:
        return _invalid("handle must not be empty")
    if len(value.encode("utf-8")) > limits.max_handle_bytes:
        return _quota(f"handle is longer than {limits.max_handle_bytes} bytes")
    return None


def check_idle_timeout(idle_ms: int, limits: Limits) -> Problem | None:
    """A new idle timeout for an existing session (Update, level 4): > 0 and within the limit."""
    if idle_ms <= 0:
        return _invalid(f"idle_timeout_ms must be > 0, got {idle_ms}")
    if idle_ms > limits.max_idle_timeout_ms:
        return _quota(f"idle_timeout_ms ({idle_ms}) exceeds the limit of {limits.max_idle_timeout_ms}")
    return None


def check_timeouts(idle_ms: int, absolute_ms: int, limits: Limits) -> Problem | None:
    if idle_ms <= 0:
        return _invalid(f"idle_timeout_ms must be > 0, got {idle_ms}")
    if absolute_ms <= 0:
        return _invalid(f"absolute_timeout_ms must be > 0, got {absolute_ms}")
    if absolute_ms < idle_ms:
        return _invalid(
            f"absolute_timeout_ms ({absolute_ms}) must not be shorter than idle_timeout_ms ({idle_ms})"
        )
    if idle_ms > limits.max_idle_timeout_ms:
        return _quota(f"idle_timeout_ms ({idle_ms}) exceeds the limit of {limits.max_idle_timeout_ms}")
    if absolute_ms > limits.max_absolute_timeout_ms:
        return _quota(
            f"absolute_timeout_ms ({absolute_ms}) exceeds the limit of {limits.max_absolute_timeout_ms}"
        )
    return None


def check_attribute_name(name: str, limits: Limits) -> Problem | None:
    size = len(name.encode("utf-8"))
    if size == 0:
        return _invalid("attribute name must not be empty")
    if size > limits.max_attribute_name_bytes:
        return _quota(
            f"attribute name {name[:32]!r} is {size} bytes, the limit is {limits.max_attribute_name_bytes}"
        )
    return None


def check_attributes(pairs: Iterable[tuple[str, bytes]], limits: Limits, field: str) -> Problem | None:
    """Per-attribute limits, plus duplicates; whole-session limits are checked at apply."""
    seen: set[str] = set()
    for name, value in pairs:
        problem = check_attribute_name(name, limits)
        if problem:
            return problem
        if name in seen:
            return _invalid(f"attribute {name!r} appears twice in {field}")
        seen.add(name)
        if len(value) > limits.max_attribute_value_bytes:
            return _quota(
                f"attribute {name!r} value is {len(value)} bytes, "
                f"the limit is {limits.max_attribute_value_bytes}"
            )
    if len(seen) > limits.max_attributes_per_session:
        return _quota(f"{field} has {len(seen)} attributes, the limit is {limits.max_attributes_per_session}")
    return None


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_update_names(
    sets: Iterable[tuple[str, bytes]],
    deletes: Iterable[str],
    increments: Iterable[tuple[str, int]],
    limits: Limits,
) -> Problem | None:
    """Names of deletes and increments are valid; an incremented name is in no other list.

    A name both deleted and set is allowed (deletes apply first, so the set wins).
    """
    for name in deletes:
        problem = check_attribute_name(name, limits)
        if problem:
            return problem
    others = {name: "set" for name, _ in sets} | {name: "delete" for name in deletes}
    counted: set[str] = set()
    for name, delta in increments:
        problem = check_attribute_name(name, limits)
        if problem:
            return problem
        if name in others:
            return _invalid(f"attribute {name!r} appears in both {others[name]} and increment")
        if name in counted:
            return _invalid(f"attribute {name!r} appears twice in increment")
        counted.add(name)
        if not INT64_MIN <= delta <= INT64_MAX:
            return _invalid(f"increment of {name!r} is outside the 64-bit range")
    return None


def check_rebase(
    increments: Iterable[tuple[str, int]], rebase: Iterable[tuple[str, int]], read_version: int | None
) -> Problem | None:
    """A rebase (a sealed value converted to a counter) names incremented attributes, once each,
    with a 64-bit base, and is guarded by the version its values were read at."""
    incremented = {name for name, _ in increments}
    seen: set[str] = set()
    for name, base in rebase:
        if read_version is None:
            return _invalid("rebase needs read_version")
        if name not in incremented or name in seen:
            return _invalid(f"rebase of {name!r} must name an incremented attribute, once")
        seen.add(name)
        if not INT64_MIN <= base <= INT64_MAX:
            return _invalid(f"rebase of {name!r} is outside the 64-bit range")
    return None


def parse_counter(name: str, raw: bytes | None) -> int | Problem:
    """A counter attribute's value: ASCII decimal, missing counts as 0."""
    if raw is None:
        return 0
    try:
        text = raw.decode("ascii")
        value = int(text)
    except (UnicodeDecodeError, ValueError):
        return _invalid(f"attribute {name!r} does not hold a decimal integer, cannot increment it")
    if text != str(value):
        return _invalid(f"attribute {name!r} does not hold a canonical decimal integer, cannot increment it")
    return value


def session_bytes(attributes: Iterable[tuple[str, bytes]]) -> int:
    """What counts against max_session_bytes: every name's UTF-8 bytes plus its value."""
    return sum(len(name.encode("utf-8")) + len(value) for name, value in attributes)


# Stricter rules for new requests: the service runs them before proposing, apply never
# does. What apply checks decides how existing log entries replay, so tightening it would
# make nodes of different releases compute different states from the same log.
MIN_IDLE_TIMEOUT_MS = 1000


def check_request_token_hash(value: bytes, field: str = "token_hash") -> Problem | None:
    """check_token_hash, and no hash of one repeated byte (all zeros: an unset buffer)."""
    problem = check_token_hash(value, field)
    if problem is None and value.count(value[0]) == len(value):
        return _invalid(f"{field} is one byte value (0x{value[0]:02x}) repeated: not the SHA-256 of a token")
    return problem


def check_request_idle_timeout(idle_ms: int) -> Problem | None:
    """A new request's idle timeout is at least MIN_IDLE_TIMEOUT_MS."""
    if idle_ms < MIN_IDLE_TIMEOUT_MS:
        return _invalid(f"idle_timeout_ms must be >= {MIN_IDLE_TIMEOUT_MS}, got {idle_ms}")
    return None


def check_request_timeouts(idle_ms: int, absolute_ms: int, limits: Limits) -> Problem | None:
    """check_timeouts, and an idle timeout of at least MIN_IDLE_TIMEOUT_MS (absolute >= idle)."""
    problem = check_timeouts(idle_ms, absolute_ms, limits)
    if problem is None and idle_ms < MIN_IDLE_TIMEOUT_MS:
        return _invalid(f"idle_timeout_ms must be >= {MIN_IDLE_TIMEOUT_MS}, got {idle_ms}")
    return problem

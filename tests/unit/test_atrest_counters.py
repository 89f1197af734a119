"""A counter whose value was sealed (store/sealing.py "rebase"): converted once, counted once."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from sessionquorum.store import atrest
from sessionquorum.store import commands as c
from sessionquorum.store import errors as e
from sessionquorum.store.config import Limits
from sessionquorum.store.keyfile import KeyRing, new_keys, write_keys
from sessionquorum.store.replies import Code, Reply
from sessionquorum.store.sealing import Sealing
from sessionquorum.store.state import SessionMachine

L5 = c.COUNTER_REBASE_LEVEL
HOUR_MS = 3_600_000


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    write_keys(tmp_path / "atrest.keys", new_keys())
    return KeyRing(tmp_path / "atrest.keys")


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _apply(m: SessionMachine, op: c.Op, seq: int, cid: bytes = b"client-1") -> Reply:
    return m.apply(c.encode(c.Command(op, now_ms=1_000, client_id=cid, sequence=seq, client_epoch_ms=1)))


def _propose(sealing: Sealing, m: SessionMachine, op: c.Op) -> c.Op:
    return sealing.prepare(op, sealing.plan(m, op, L5), L5)


def _increment(name: str, delta: int, expected: int | None = None) -> c.Update:
    return c.Update(_hash("t"), (), (), expected, ((name, delta),))


def _with_sealed(ring: KeyRing, value: bytes) -> tuple[Sealing, SessionMachine, bytes]:
    """A machine holding session "t" whose "n" is sealed; (sealing, machine, stored hash)."""
    sealing, m = Sealing(ring), SessionMachine(Limits())
    create = _propose(sealing, m, c.Create(_hash("t"), "h1", None, (("n", value),), HOUR_MS, HOUR_MS))
    assert _apply(m, create, 1, b"creator").code is Code.OK
    assert isinstance(create, c.Create) and atrest.is_sealed(m.sessions[create.token_hash].pairs()[0][1])
    return sealing, m, create.token_hash


def _stored(m: SessionMachine, token_hash: bytes, name: str) -> bytes:
    return dict(m.sessions[token_hash].pairs())[name]


def test_first_increment_of_a_sealed_integer_converts_it_to_a_plaintext_counter_in_one_command(
    ring: KeyRing,
) -> None:
    sealing, m, stored = _with_sealed(ring, b"5")
    op = _propose(sealing, m, _increment("n", 2))
    assert isinstance(op, c.Update)
    assert op.rebase == (("n", 5),) and op.read_version == 1 and op.bound_handle == "h1"
    assert c.level_of(c.Command(op, 0)) == L5
    reply = _apply(m, op, 1)
    assert reply.code is Code.OK and reply.session is not None
    assert reply.session.attributes == (("n", b"7"),)  # the reply carries the counter, as for any increment
    assert _stored(m, stored, "n") == b"7" and m.sessions[stored].version == 2
    plain = _propose(sealing, m, _increment("n", 1))
    assert isinstance(plain, c.Update) and plain.rebase == () and plain.read_version is None
    assert _apply(m, plain, 2).code is Code.OK and _stored(m, stored, "n") == b"8"


@pytest.mark.parametrize("value", [b"abc", b"007", b" 5", b"+5", b"", b"99999999999999999999"])
def test_sealed_value_that_is_not_a_canonical_integer_is_refused_without_showing_it(
    ring: KeyRing, value: bytes
) -> None:
    sealing, m, stored = _with_sealed(ring, value)
    with pytest.raises(e.InvalidArgument, match="not a canonical decimal integer") as refused:
        _propose(sealing, m, _increment("n", 1))
    if value:
        assert value.decode() not in refused.value.message.replace("'n'", "")
    assert m.sessions[stored].version == 1 and atrest.is_sealed(_stored(m, stored, "n"))


def test_conversion_read_at_an_older_version_is_retried_not_remembered_and_every_increment_counts(
    ring: KeyRing,
) -> None:
    sealing, m, stored = _with_sealed(ring, b"10")
    # Two proposers read version 1 and both plan a conversion of the sealed value.
    mine, theirs = _propose(sealing, m, _increment("n", 1)), _propose(sealing, m, _increment("n", 1))
    assert _apply(m, theirs, 1, b"other").code is Code.OK
    refused = _apply(m, mine, 1)
    assert refused.code is Code.RETRY  # the hazard: a base read before another increment applied
    assert _stored(m, stored, "n") == b"11" and m.sessions[stored].version == 2
    again = _propose(sealing, m, _increment("n", 1))  # planned again: now a plain increment
    assert isinstance(again, c.Update) and again.rebase == ()
    reply = _apply(m, again, 1)  # the same request id: RETRY was not remembered
    assert reply.code is Code.OK and _stored(m, stored, "n") == b"12"


def test_canary_a_conversion_without_its_version_guard_loses_an_acknowledged_increment(ring: KeyRing) -> None:
    sealing, m, stored = _with_sealed(ring, b"10")
    mine, theirs = _propose(sealing, m, _increment("n", 1)), _propose(sealing, m, _increment("n", 1))
    assert _apply(m, theirs, 1, b"other").code is Code.OK
    assert isinstance(mine, c.Update)
    unguarded = replace(mine, read_version=m.sessions[stored].version)  # the guard, defeated
    assert _apply(m, unguarded, 1).code is Code.OK
    assert _stored(m, stored, "n") == b"11"  # two acknowledged increments, one counted


def test_retry_of_a_converting_increment_is_answered_from_the_table_not_applied_again(ring: KeyRing) -> None:
    sealing, m, stored = _with_sealed(ring, b"5")
    first = _propose(sealing, m, _increment("n", 3))
    assert _apply(m, first, 1).code is Code.OK
    retry = _propose(sealing, m, _increment("n", 3))  # after an unknown outcome: finds a plain counter
    assert isinstance(first, c.Update) and isinstance(retry, c.Update) and retry.rebase == ()
    assert c.fingerprint(first) == c.fingerprint(retry)  # the id stays bound to the client's request
    reply = _apply(m, retry, 1)
    assert reply.code is Code.OK and reply.session is not None and reply.session.attributes == (("n", b"8"),)
    assert _stored(m, stored, "n") == b"8" and m.sessions[stored].version == 2  # applied once
    other = _propose(sealing, m, _increment("n", 4))
    assert _apply(m, other, 1).code is Code.INVALID  # the same id with another body is still refused


def test_conversion_with_the_callers_expected_version_conflicts_as_the_caller_asked(ring: KeyRing) -> None:
    sealing, m, _ = _with_sealed(ring, b"5")
    mine = _propose(sealing, m, _increment("n", 1, expected=1))
    assert _apply(m, _propose(sealing, m, _increment("n", 1)), 1, b"other").code is Code.OK
    refused = _apply(m, mine, 1)
    assert refused.code is Code.VERSION_CONFLICT and refused.count == 2
    assert _apply(m, _propose(sealing, m, _increment("n", 1, expected=1)), 1).code is Code.VERSION_CONFLICT


def test_conversion_alongside_sealed_sets_seals_the_sets_and_counts_the_counter(ring: KeyRing) -> None:
    sealing, m, stored = _with_sealed(ring, b"1")
    request = c.Update(_hash("t"), (("cart", b"apples"),), (), None, (("n", 1),))
    op = _propose(sealing, m, request)
    assert isinstance(op, c.Update) and op.rebase == (("n", 1),) and op.sealed is not None
    assert _apply(m, op, 1).code is Code.OK
    assert _stored(m, stored, "n") == b"2" and atrest.is_sealed(_stored(m, stored, "cart"))


@pytest.mark.parametrize(
    ("rebase", "read_version", "problem"),
    [
        ((("n", 1),), None, "needs read_version"),
        ((("other", 1),), 1, "must name an incremented attribute"),
        ((("n", 1), ("n", 2)), 1, "must name an incremented attribute"),
        ((("n", 2**63),), 1, "outside the 64-bit range"),
    ],
)
def test_malformed_rebase_is_refused_by_apply_and_changes_nothing(
    ring: KeyRing, rebase: tuple[tuple[str, int], ...], read_version: int | None, problem: str
) -> None:
    _, m, stored = _with_sealed(ring, b"1")
    op = replace(_increment("n", 1), token_hash=stored, rebase=rebase, read_version=read_version)
    reply = _apply(m, op, 1)
    assert reply.code is Code.INVALID and problem in reply.message
    assert m.sessions[stored].version == 1


def test_rebase_fields_need_level_5_and_round_trip_through_an_entry() -> None:
    op = c.Update(b"h" * 32, (), (), None, (("n", 1),), rebase=(("n", 4),), read_version=3)
    entry = c.encode(c.Command(op, now_ms=1))
    assert c.decode(entry) == c.Command(op, now_ms=1)
    with pytest.raises(c.UndecodableEntry, match="level 5"):
        c.decode(entry, supported_level=L5 - 1)
    plain = c.Update(b"h" * 32, (), (), None, (("n", 1),))
    assert b"rebase" not in c.encode(c.Command(plain, now_ms=1))  # older releases' bytes, unchanged

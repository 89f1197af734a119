"""Server-side counters: increment is one replicated step, so no increment is lost."""

from __future__ import annotations

import hashlib

from sessionquorum.store.commands import Command, Create, Update, encode
from sessionquorum.store.config import Limits
from sessionquorum.store.replies import Code, Reply
from sessionquorum.store.state import SessionMachine

H = hashlib.sha256(b"t").digest()


def machine() -> SessionMachine:
    m = SessionMachine(Limits())
    m.apply(encode(Command(Create(H, "h1", None, (("c", b"5"), ("s", b"x")), 60_000, 60_000), now_ms=1)))
    return m


def incr(m: SessionMachine, *pairs: tuple[str, int], seq: int = 0, **kw: object) -> Reply:
    op = Update(H, kw.get("set", ()), kw.get("delete", ()), None, pairs)  # type: ignore[arg-type]
    cid = b"c" * 16 if seq else None
    return m.apply(encode(Command(op, now_ms=2, client_id=cid, sequence=seq)))


def test_increment_adds_to_existing_and_missing_counters_and_reports_new_values() -> None:
    m = machine()
    r = incr(m, ("c", 3), ("new", -2))
    assert r.code is Code.OK and r.session is not None
    assert r.session.attributes == (("c", b"8"), ("new", b"-2"))
    assert r.session.version == 2
    assert m.read(H, 3).session.attributes == (("c", b"8"), ("new", b"-2"), ("s", b"x"))  # type: ignore[union-attr]


def test_retried_increment_with_same_request_id_applies_once() -> None:
    m = machine()
    first = incr(m, ("c", 1), seq=1)
    assert incr(m, ("c", 1), seq=1) == first
    assert dict(m.read(H, 3).session.attributes)["c"] == b"6"  # type: ignore[union-attr]


def test_increment_of_non_integer_attribute_is_invalid_and_changes_nothing() -> None:
    m = machine()
    before = m.read(H, 3)
    r = incr(m, ("c", 1), ("s", 1))
    assert r.code is Code.INVALID and "'s' does not hold a decimal integer" in r.message
    assert m.read(H, 3) == before


def test_name_in_both_set_and_increment_is_invalid() -> None:
    m = machine()
    r = incr(m, ("c", 1), set=(("c", b"1"),))
    assert r.code is Code.INVALID and "appears in both set and increment" in r.message


def test_increment_overflowing_64_bits_is_invalid() -> None:
    m = machine()
    assert incr(m, ("c", 2**63 - 6)).code is Code.OK
    r = incr(m, ("c", 1))
    assert r.code is Code.INVALID and "overflows 64 bits" in r.message

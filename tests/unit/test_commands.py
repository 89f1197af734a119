"""The log entry envelope: every op round-trips, and anything else is UndecodableEntry.

A replica that guessed at an entry it cannot read would diverge from the others, so decode
is strict about every type: a bool is not an int, a str is not bytes, and vice versa.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionquorum.store.commands import (
    COMMAND_VERSION,
    Barrier,
    Command,
    Create,
    Delete,
    Expire,
    Op,
    ReuseDetected,
    RevokePrincipal,
    Rotate,
    SecurityOn,
    SetPrincipalEnabled,
    Touch,
    UndecodableEntry,
    Update,
    decode,
    encode,
)
from sessionquorum.store.config import Limits
from sessionquorum.store.state import SessionMachine

HASH = hashlib.sha256(b"token").digest()
NEW_HASH = hashlib.sha256(b"new token").digest()

ONE_OF_EACH: list[Op] = [
    Create(HASH, "h1", "alice", (("a", b"1"), ("b", b"")), 1_000, 10_000),
    Create(HASH, "h1", None, (), 1, 1),
    Touch(HASH),
    Touch(HASH, with_attributes=True),
    Update(HASH, (("a", b"\x00\xff"),), ("b", "c"), 3),
    Update(HASH, (), (), None),
    Rotate(HASH, NEW_HASH, "alice"),
    Rotate(HASH, NEW_HASH, None),
    Rotate(HASH, NEW_HASH, None, grace=True),
    Delete(HASH, None),
    Delete(None, "h1"),
    RevokePrincipal("alice", "h1"),
    RevokePrincipal("alice", None),
    Expire(1_000),
    Barrier(),
    SecurityOn(),
    SetPrincipalEnabled("alice", False),
    SetPrincipalEnabled("alice", True),
    ReuseDetected(HASH),
]


def envelope(op: Op) -> dict[str, Any]:
    """The decoded msgpack map of a valid entry, for tests to spoil one field of."""
    return msgpack.unpackb(encode(Command(op, now_ms=5, client_id=b"cid", sequence=7)), raw=False)  # type: ignore[no-any-return]


def pack(raw: Any) -> bytes:
    return msgpack.packb(raw, use_bin_type=True)


def spoiled_argument(op: Op, key: str, value: Any) -> bytes:
    raw = envelope(op)
    raw["a"][key] = value
    return pack(raw)


def missing_argument(op: Op, key: str) -> bytes:
    raw = envelope(op)
    del raw["a"][key]
    return pack(raw)


# ------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("op", ONE_OF_EACH, ids=lambda op: type(op).__name__)
@pytest.mark.parametrize(
    ("client_id", "sequence"), [(None, 0), (b"client-1", 42), (b"", 2**63 - 1)], ids=["anon", "cid", "max"]
)
def test_every_op_round_trips_through_encode_and_decode(
    op: Op, client_id: bytes | None, sequence: int
) -> None:
    cmd = Command(op, now_ms=1_700_000_000_000, client_id=client_id, sequence=sequence)
    assert decode(encode(cmd)) == cmd


def test_encoding_is_deterministic_for_equal_commands() -> None:
    a = Command(Update(HASH, (("a", b"1"),), ("b",), None), now_ms=1, client_id=b"c", sequence=1)
    b = Command(Update(HASH, (("a", b"1"),), ("b",), None), now_ms=1, client_id=b"c", sequence=1)
    assert encode(a) == encode(b)


def test_the_envelope_carries_the_current_version_and_op_name() -> None:
    raw = envelope(RevokePrincipal("alice", None))
    assert raw["v"] == COMMAND_VERSION
    assert raw["op"] == "revoke_principal"
    assert raw["now"] == 5
    assert raw["cid"] == b"cid"
    assert raw["seq"] == 7


attribute_pairs = st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), max_size=4).map(tuple)
int64 = st.integers(-(2**63), 2**63 - 1)
random_ops: st.SearchStrategy[Op] = st.one_of(
    st.builds(Create, st.binary(), st.text(), st.none() | st.text(), attribute_pairs, int64, int64),
    st.builds(Touch, st.binary(), st.booleans()),
    st.builds(Update, st.binary(), attribute_pairs, st.lists(st.text()).map(tuple), st.none() | int64),
    st.builds(Rotate, st.binary(), st.binary(), st.none() | st.text()),
    st.builds(Delete, st.none() | st.binary(), st.none() | st.text()),
    st.builds(RevokePrincipal, st.text(), st.none() | st.text()),
    st.builds(Expire, int64),
    st.just(Barrier()),
)


@settings(max_examples=200, deadline=None)
@given(op=random_ops, now=int64, client_id=st.none() | st.binary(max_size=16), sequence=int64)
def test_any_command_round_trips(op: Op, now: int, client_id: bytes | None, sequence: int) -> None:
    cmd = Command(op, now_ms=now, client_id=client_id, sequence=sequence)
    assert decode(encode(cmd)) == cmd


# ------------------------------------------------------------------------- not an entry


@pytest.mark.parametrize(
    "entry",
    [
        b"",
        b"\xc1",  # a byte msgpack never uses
        b"\x92\x01",  # an array cut short
        encode(Command(Barrier(), now_ms=0)) + b"\x00",  # trailing data
        b"not msgpack at all, just text",
        pack({1: 2}),  # map keys must be strings
    ],
    ids=["empty", "reserved-byte", "truncated", "trailing-data", "text", "int-keys"],
)
def test_decode_of_non_msgpack_raises_undecodable(entry: bytes) -> None:
    with pytest.raises(UndecodableEntry):
        decode(entry)


@pytest.mark.parametrize(
    "raw",
    [[1, "barrier"], "barrier", 1, None],
    ids=["array", "string", "int", "nil"],
)
def test_decode_of_msgpack_that_is_not_a_map_raises_undecodable(raw: Any) -> None:
    with pytest.raises(UndecodableEntry, match="not a map"):
        decode(pack(raw))


@pytest.mark.parametrize(
    "version",
    [0, 2, COMMAND_VERSION + 100, -1, None, "1", b"\x01"],
    ids=["zero", "two", "future", "negative", "nil", "str", "bytes"],
)
def test_decode_of_unsupported_version_raises_undecodable(version: Any) -> None:
    raw = envelope(Barrier())
    raw["v"] = version
    with pytest.raises(UndecodableEntry, match="version"):
        decode(pack(raw))


@pytest.mark.parametrize("version", [True, 1.0], ids=["bool", "float"])
def test_decode_of_version_with_wrong_type_raises_undecodable(version: Any) -> None:
    # True == 1 and 1.0 == 1 in Python: a plain equality test would accept them.
    raw = envelope(Barrier())
    raw["v"] = version
    with pytest.raises(UndecodableEntry, match="version"):
        decode(pack(raw))


def test_decode_of_entry_without_version_raises_undecodable() -> None:
    raw = envelope(Barrier())
    del raw["v"]
    with pytest.raises(UndecodableEntry, match="version"):
        decode(pack(raw))


@pytest.mark.parametrize("name", ["drop_all", "Create", "", "create "], ids=repr)
def test_decode_of_unknown_op_raises_undecodable(name: str) -> None:
    raw = envelope(Barrier())
    raw["op"] = name
    with pytest.raises(UndecodableEntry, match="unknown operation"):
        decode(pack(raw))


@pytest.mark.parametrize(
    ("key", "value"),
    [("op", b"barrier"), ("op", None), ("a", []), ("a", None)],
    ids=["op-bytes", "op-nil", "args-array", "args-nil"],
)
def test_decode_of_entry_without_op_or_args_raises_undecodable(key: str, value: Any) -> None:
    raw = envelope(Barrier())
    raw[key] = value
    with pytest.raises(UndecodableEntry, match="lacks an operation"):
        decode(pack(raw))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("now", True),
        ("now", 1.5),
        ("now", "5"),
        ("now", None),
        ("seq", False),
        ("seq", 7.0),
        ("seq", b"\x07"),
        ("seq", None),
        ("cid", "client"),
        ("cid", 1),
        ("cid", True),
    ],
    ids=lambda x: repr(x),
)
def test_decode_of_malformed_header_raises_undecodable(key: str, value: Any) -> None:
    raw = envelope(Barrier())
    raw[key] = value
    with pytest.raises(UndecodableEntry):
        decode(pack(raw))


def test_decode_of_header_without_client_id_reads_it_as_none() -> None:
    raw = envelope(Barrier())
    raw["cid"] = None
    assert decode(pack(raw)).client_id is None


# ---------------------------------------------------------------------- argument types


CREATE = ONE_OF_EACH[0]
UPDATE = ONE_OF_EACH[4]


@pytest.mark.parametrize(
    ("op", "key", "value"),
    [
        # str where bytes, bytes where str
        (CREATE, "token_hash", HASH.hex()),
        (CREATE, "handle", b"h1"),
        (CREATE, "principal", b"alice"),
        (Touch(HASH), "token_hash", "hash"),
        (UPDATE, "token_hash", "hash"),
        (Rotate(HASH, NEW_HASH, None), "new_token_hash", NEW_HASH.hex()),
        (Rotate(HASH, NEW_HASH, None), "principal", b"bob"),
        (Delete(HASH, None), "token_hash", "hash"),
        (Delete(None, "h1"), "handle", b"h1"),
        (RevokePrincipal("alice", None), "principal", b"alice"),
        (RevokePrincipal("alice", None), "except_handle", b"h1"),
        # bool where int, and other numbers
        (CREATE, "idle_timeout_ms", True),
        (CREATE, "absolute_timeout_ms", False),
        (CREATE, "idle_timeout_ms", 1.0),
        (CREATE, "absolute_timeout_ms", "10000"),
        (UPDATE, "expected_version", True),
        (UPDATE, "expected_version", 3.0),
        (Expire(10), "limit", True),
        (Expire(10), "limit", None),
        # int where bool
        (Touch(HASH), "with_attributes", 1),
        (Touch(HASH), "with_attributes", None),
        # None where a value is required
        (CREATE, "token_hash", None),
        (CREATE, "handle", None),
        (RevokePrincipal("alice", None), "principal", None),
        (Rotate(HASH, NEW_HASH, None), "token_hash", None),
        # malformed attribute lists
        (CREATE, "attributes", None),
        (CREATE, "attributes", {"a": b"1"}),
        (CREATE, "attributes", [["a", "1"]]),
        (CREATE, "attributes", [[b"a", b"1"]]),
        (CREATE, "attributes", [["a"]]),
        (CREATE, "attributes", [["a", b"1", b"2"]]),
        (CREATE, "attributes", ["a"]),
        (UPDATE, "set", [["a", 1]]),
        (UPDATE, "delete", "a"),
        (UPDATE, "delete", [b"a"]),
        (UPDATE, "delete", [None]),
    ],
    ids=lambda x: x if isinstance(x, str) and len(x) < 24 else type(x).__name__,
)
def test_decode_of_argument_with_wrong_type_raises_undecodable(op: Op, key: str, value: Any) -> None:
    with pytest.raises(UndecodableEntry):
        decode(spoiled_argument(op, key, value))


@pytest.mark.parametrize(
    ("op", "key"),
    [
        (CREATE, "token_hash"),
        (CREATE, "principal"),
        (CREATE, "attributes"),
        (CREATE, "absolute_timeout_ms"),
        (Touch(HASH), "with_attributes"),
        (UPDATE, "set"),
        (UPDATE, "delete"),
        (UPDATE, "expected_version"),
        (Rotate(HASH, NEW_HASH, None), "principal"),
        (Delete(HASH, None), "handle"),
        (RevokePrincipal("alice", None), "except_handle"),
        (Expire(10), "limit"),
    ],
    ids=lambda x: x if isinstance(x, str) else type(x).__name__,
)
def test_decode_of_entry_missing_an_argument_raises_undecodable(op: Op, key: str) -> None:
    with pytest.raises(UndecodableEntry):
        decode(missing_argument(op, key))


def test_decode_of_optional_argument_given_as_nil_reads_none() -> None:
    cmd = decode(spoiled_argument(Rotate(HASH, NEW_HASH, "alice"), "principal", None))
    assert cmd.op == Rotate(HASH, NEW_HASH, None)


# ------------------------------------------------------------------- at the state machine


def test_apply_of_undecodable_entry_raises_and_changes_nothing() -> None:
    m = SessionMachine(Limits())
    m.apply(encode(Command(Create(HASH, "h1", None, (), 1_000, 10_000), now_ms=10)))
    before = m.snapshot()
    with pytest.raises(UndecodableEntry):
        m.apply(spoiled_argument(Touch(HASH), "token_hash", HASH.hex()))
    with pytest.raises(UndecodableEntry):
        m.apply(b"\xc1")
    assert m.snapshot() == before

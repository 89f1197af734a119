"""Packed log entries (store/_packing.py): format, grouping, and apply identical to one by one.

A packed entry must leave a replica exactly where the same commands as separate entries
would have: same replies, same snapshot bytes, same exactly-once answers. The property test
draws the random command logs of test_state_properties.py and cuts them into random packs.
"""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionquorum.store import _packing
from sessionquorum.store import commands as c
from sessionquorum.store.config import Limits, RaftSettings
from sessionquorum.store.errors import ConfigError
from sessionquorum.store.replies import Code, Reply
from sessionquorum.store.state import SessionMachine
from tests.unit.test_state_properties import PROPERTY_SETTINGS, command_logs, policies, small_limits

HASH = hashlib.sha256(b"token").digest()


def create(n: int, now_ms: int, cid: bytes | None = None, seq: int = 0) -> bytes:
    op = c.Create(hashlib.sha256(f"t{n}".encode()).digest(), f"h{n}", "p", (("a", b"1"),), 60_000, 600_000)
    return c.encode(c.Command(op, now_ms=now_ms, client_id=cid, sequence=seq))


def apply_plain(m: SessionMachine, entries: list[bytes]) -> list[Reply]:
    return [m.apply(e) for e in entries]


def apply_packed(m: SessionMachine, entries: list[bytes]) -> list[Reply]:
    result = m.apply_entry(_packing.pack(entries))
    assert isinstance(result, list)
    return result


# ------------------------------------------------------------------------------ format
def test_a_packed_entry_is_the_command_envelope_with_the_inner_commands_as_maps() -> None:
    entries = [create(1, 10), create(2, 11, b"cid", 1)]
    raw = msgpack.unpackb(_packing.pack(entries), raw=False, strict_map_key=True)
    assert raw == {
        "v": c.COMMAND_VERSION,
        "op": "many",
        "now": 0,
        "cid": None,
        "seq": 0,
        "a": {"entries": [msgpack.unpackb(e, raw=False) for e in entries]},
    }


def test_a_lone_command_is_never_packed() -> None:
    with pytest.raises(ValueError, match="at least two"):
        _packing.pack([create(1, 10)])


def test_an_old_decoder_refuses_a_packed_entry_as_an_unknown_operation() -> None:
    # What a node of an older release does with it: UndecodableEntry, i.e. exit 70.
    with pytest.raises(c.UndecodableEntry, match="unknown operation 'many'"):
        c.decode(_packing.pack([create(1, 10), create(2, 11)]))


def test_a_node_below_level_5_refuses_to_apply_a_packed_entry() -> None:
    old = SessionMachine(Limits(), supported_level=4)
    with pytest.raises(c.UndecodableEntry, match="needs command level 5"):
        old.apply_entry(_packing.pack([create(1, 10), create(2, 11)]))
    assert old.sessions == {}


BARRIER = {"v": 1, "op": "barrier", "now": 1, "cid": None, "seq": 0, "a": {}}


@pytest.mark.parametrize(
    "inner",
    [[], [BARRIER], [BARRIER, b"not a map"], [BARRIER, {**BARRIER, "op": "many"}], "nope"],
    ids=["empty", "one", "not-a-map", "nested", "not-a-list"],
)
def test_a_malformed_packed_entry_is_undecodable_and_changes_nothing(inner: object) -> None:
    entry = msgpack.packb({"v": 1, "op": "many", "now": 0, "cid": None, "seq": 0, "a": {"entries": inner}})
    m = SessionMachine(Limits())
    before = m.snapshot()
    with pytest.raises(c.UndecodableEntry):
        m.apply_entry(entry)
    assert m.snapshot() == before


# ------------------------------------------------------------------------------ grouping
def test_groups_keep_arrival_order_and_respect_the_count_bound() -> None:
    groups = _packing.take_groups(list(range(10)), lambda _: 1, _packing.PackLimits(max_commands=4))
    assert groups == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_groups_respect_the_byte_bound_and_an_oversized_command_travels_alone() -> None:
    sizes = [10, 10, 10, 100, 5, 5]
    groups = _packing.take_groups(sizes, lambda n: n, _packing.PackLimits(max_commands=99, max_bytes=25))
    assert groups == [[10, 10], [10], [100], [5, 5]]
    assert all(sum(g) <= 25 or len(g) == 1 for g in groups)


def test_the_default_bounds_stay_well_under_pysyncobjs_64_kib_chunking() -> None:
    entry = create(1, 10)
    groups = _packing.take_groups([entry] * 1000, len, _packing.PackLimits())
    assert max(len(_packing.pack(g)) for g in groups if len(g) > 1) < 48 * 1024


# ------------------------------------------------------------------------------ apply
def test_packed_apply_answers_each_command_and_counts_the_entry() -> None:
    m = SessionMachine(Limits())
    replies = apply_packed(m, [create(1, 10), create(2, 11), create(1, 12)])
    assert [r.code for r in replies] == [Code.OK, Code.OK, Code.ALREADY_EXISTS]
    assert (m.packed_entries, m.packed_commands) == (1, 3)
    assert isinstance(m.apply_entry(create(3, 13)), Reply)  # a plain entry still answers one Reply
    assert m.packed_entries == 1


def test_a_retry_inside_the_same_packed_entry_is_answered_from_the_exactly_once_table() -> None:
    first, retry = create(1, 10, b"client", 7), create(1, 10, b"client", 7)
    packed, plain = SessionMachine(Limits()), SessionMachine(Limits())
    replies = apply_packed(packed, [first, retry])
    assert replies == apply_plain(plain, [first, retry])
    assert replies[0] == replies[1] and replies[0].ok
    assert packed.event_counts()["exactly_once_hits"] == 1
    assert packed.snapshot() == plain.snapshot()


def test_each_inner_command_keeps_its_own_time() -> None:
    # The envelope's time is not applied first: a later command in the pack must not
    # move the clock before an earlier one (the idle deadline would differ).
    packed, plain = SessionMachine(Limits()), SessionMachine(Limits())
    entries = [create(1, 1_000), create(2, 50_000)]
    assert apply_packed(packed, entries) == apply_plain(plain, entries)
    assert packed.snapshot() == plain.snapshot()


@PROPERTY_SETTINGS
@given(log=command_logs(), policy=policies, data=st.data())
def test_a_log_cut_into_packed_entries_gives_the_replies_and_snapshot_of_applying_it_one_by_one(
    log: list[bytes], policy: str, data: st.DataObject
) -> None:
    plain, packed = SessionMachine(small_limits(policy)), SessionMachine(small_limits(policy))
    expected = apply_plain(plain, log)
    got: list[Reply] = []
    i = 0
    while i < len(log):
        n = data.draw(st.integers(1, 6), label="pack size")
        run = log[i : i + n]
        got.extend(apply_packed(packed, run) if len(run) > 1 else [packed.apply_entry(run[0])])  # type: ignore[list-item]
        i += n
    assert got == expected
    assert packed.snapshot() == plain.snapshot()
    assert packed.digest() == plain.digest()


def test_replies_of_accepts_only_one_list_of_the_right_length() -> None:
    r = Reply(Code.OK)
    assert _packing.replies_of([r, r], 2) == [r, r]
    assert _packing.replies_of([r], 2) is None
    assert _packing.replies_of(r, 1) is None


@pytest.mark.parametrize(
    "settings",
    [{"pack_commands": 0}, {"pack_commands": 1025}, {"pack_bytes": 64 * 1024}, {"pack_bytes": 512}],
)
def test_pack_bounds_outside_their_range_are_refused(settings: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match=r"raft\.pack_"):
        RaftSettings(**settings).validate()  # type: ignore[arg-type]


def test_the_default_pack_bounds_are_valid_and_those_of_the_module() -> None:
    RaftSettings().validate()
    assert (RaftSettings().pack_commands, RaftSettings().pack_bytes) == (
        _packing.MAX_COMMANDS,
        _packing.MAX_BYTES,
    )

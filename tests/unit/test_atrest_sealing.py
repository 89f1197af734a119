"""Sealing at the service (store/sealing.py) against the real state machine and commands."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sessionquorum.store import atrest
from sessionquorum.store import commands as c
from sessionquorum.store import errors as e
from sessionquorum.store.config import Limits
from sessionquorum.store.keyfile import KeyRing, new_keys, with_current, with_new_key, write_keys
from sessionquorum.store.replies import Code, Reply
from sessionquorum.store.sealing import Sealing
from sessionquorum.store.state import SessionMachine

L5, L4 = c.ATREST_LEVEL, c.ATREST_LEVEL - 1
CID = b"client-1"
HOUR_MS = 3_600_000


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    write_keys(tmp_path / "atrest.keys", new_keys())
    return KeyRing(tmp_path / "atrest.keys")


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _apply(m: SessionMachine, op: c.Op, seq: int, now_ms: int = 1_000) -> Reply:
    return m.apply(c.encode(c.Command(op, now_ms=now_ms, client_id=CID, sequence=seq, client_epoch_ms=1)))


def _create(handle: str, token: str, attrs: c.Attributes = ()) -> c.Create:
    return c.Create(_hash(token), handle, None, attrs, HOUR_MS, HOUR_MS)


def _propose(sealing: Sealing, m: SessionMachine, op: c.Op, level: int = L5) -> c.Op:
    return sealing.prepare(op, sealing.plan(m, op, level), level)


def test_create_at_level_5_stores_a_keyed_hash_and_sealed_values_that_validate_opens(ring: KeyRing) -> None:
    sealing, m = Sealing(ring), SessionMachine(Limits())
    op = _propose(sealing, m, _create("h1", "t", (("cart", b"3 apples"),)))
    assert isinstance(op, c.Create) and c.level_of(c.Command(op, 0)) == L5
    assert _apply(m, op, 1).code is Code.OK
    assert _hash("t") not in m.sessions
    assert b"3 apples" not in m.sessions[op.token_hash].attributes
    stored, reply = sealing.read(m, _hash("t"), 1_000)
    assert stored == op.token_hash
    view = sealing.open_view(reply.session)
    assert view is not None and view.attributes == (("cart", b"3 apples"),)


def test_below_level_5_commands_stay_as_older_releases_write_them(ring: KeyRing) -> None:
    sealing, m = Sealing(ring), SessionMachine(Limits())
    op = _create("h1", "t", (("cart", b"v"),))
    assert _propose(sealing, m, op, L4) == op
    assert _apply(m, op, 1).code is Code.OK
    update = c.Update(_hash("t"), (("cart", b"w"),), (), None)
    assert _propose(sealing, m, update, L4) == update


def test_session_from_before_keying_is_found_by_its_raw_hash_and_updated_under_it(ring: KeyRing) -> None:
    sealing, m = Sealing(ring), SessionMachine(Limits())
    assert _apply(m, _create("old", "legacy"), 1).code is Code.OK  # a level-4 era, unkeyed session
    stored, reply = sealing.read(m, _hash("legacy"), 1_000)
    assert stored == _hash("legacy") and reply.code is Code.OK
    op = _propose(sealing, m, c.Update(_hash("legacy"), (("a", b"x"),), (), None))
    assert isinstance(op, c.Update) and op.token_hash == _hash("legacy") and op.bound_handle == "old"
    assert _apply(m, op, 2).code is Code.OK


def test_keyed_hash_from_a_leaked_journal_opens_nothing(ring: KeyRing) -> None:
    sealing, m = Sealing(ring), SessionMachine(Limits())
    op = _propose(sealing, m, _create("h1", "t"))
    assert _apply(m, op, 1).code is Code.OK
    assert m.read(op.token_hash, 1_000).code is Code.OK  # canary: what a raw lookup would find
    stored, reply = sealing.read(m, op.token_hash, 1_000)  # the attacker presents it as a hash
    assert reply.code is Code.NOT_FOUND and stored != op.token_hash
    replayed = _propose(sealing, m, c.Delete(op.token_hash, None))
    assert _apply(m, replayed, 2).existed is False
    assert op.token_hash in m.sessions


def test_update_bound_to_another_handle_is_refused_retryably_and_not_remembered(ring: KeyRing) -> None:
    sealing, m = Sealing(ring), SessionMachine(Limits())
    create = _propose(sealing, m, _create("h1", "t"))
    _apply(m, create, 1)
    stale = c.Update(
        create.token_hash, (("a", atrest.seal(ring.keys(), "gone", "a", b"v")),), (), None, (), None, "gone"
    )
    refused = _apply(m, stale, 2)
    assert refused.code is Code.RETRY
    assert m.sessions[create.token_hash].version == 1  # nothing applied
    retry = _propose(sealing, m, c.Update(_hash("t"), (("a", b"v"),), (), None))
    assert _apply(m, retry, 2).code is Code.OK  # the same request id, not answered from the table


def test_retry_of_a_sealed_update_is_answered_once_though_its_ciphertext_differs(ring: KeyRing) -> None:
    sealing, m = Sealing(ring), SessionMachine(Limits())
    _apply(m, _propose(sealing, m, _create("h1", "t")), 1)
    request = c.Update(_hash("t"), (("a", b"v"),), (), None)
    first, second = _propose(sealing, m, request), _propose(sealing, m, request)
    assert isinstance(first, c.Update) and isinstance(second, c.Update) and first.set != second.set
    assert c.fingerprint(first) == c.fingerprint(second)
    assert _apply(m, first, 2).code is Code.OK
    assert _apply(m, second, 2).code is Code.OK
    assert m.sessions[first.token_hash].version == 2  # applied once
    other = _propose(sealing, m, c.Update(_hash("t"), (("a", b"other"),), (), None))
    assert _apply(m, other, 2).code is Code.INVALID  # a reused id with another body


def test_value_under_a_key_the_node_lacks_is_a_clear_error(ring: KeyRing, tmp_path: Path) -> None:
    sealing, m = Sealing(ring), SessionMachine(Limits())
    other = with_current(with_new_key(ring.keys(), 9), 9)
    op = _create("h1", "t", (("a", atrest.seal(other, "h1", "a", b"v")),))
    _apply(m, op, 1)
    with pytest.raises(e.Undecryptable, match="key id 9"):
        sealing.open_view(m.read(op.token_hash, 1_000).session)
    with pytest.raises(e.Undecryptable, match="no key file"):
        Sealing(None).open_view(m.read(op.token_hash, 1_000).session)


def test_sealed_fields_need_level_5_and_an_older_node_refuses_to_decode_them() -> None:
    op = c.Update(b"h" * 32, (), (), None, (), None, "handle", b"d" * 16)
    entry = c.encode(c.Command(op, now_ms=1))
    assert c.level_of(c.Command(op, 1)) == L5
    assert c.decode(entry) == c.Command(op, now_ms=1)
    with pytest.raises(c.UndecodableEntry, match="level 5"):
        c.decode(entry, supported_level=L4)

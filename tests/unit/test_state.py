"""The session state machine, one behaviour at a time.

Every test drives `SessionMachine.apply` with encoded log entries, as Raft does, and observes
the outcome only through replies, `read`, `list_principal`, the public indexes and the
canonical snapshot. Size and count limits are in test_state_limits.py, random command
sequences in test_state_properties.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from sessionquorum.store.commands import (
    Barrier,
    Command,
    Create,
    Delete,
    Expire,
    Op,
    RevokePrincipal,
    Rotate,
    Touch,
    Update,
    encode,
)
from sessionquorum.store.config import Limits
from sessionquorum.store.replies import Code, Reply, reply_to_wire
from sessionquorum.store.state import SessionMachine

IDLE_MS = 1_000
ABSOLUTE_MS = 10_000
CLIENT_A = b"client-a"
CLIENT_B = b"client-b"
CLIENT_C = b"client-c"

MachineFactory = Callable[..., SessionMachine]


def token_hash(n: int) -> bytes:
    return hashlib.sha256(f"token-{n}".encode()).digest()


def run(m: SessionMachine, op: Op, now_ms: int, client_id: bytes | None = None, sequence: int = 0) -> Reply:
    return m.apply(encode(Command(op, now_ms=now_ms, client_id=client_id, sequence=sequence)))


def create(
    n: int,
    *,
    handle: str | None = None,
    principal: str | None = None,
    attributes: tuple[tuple[str, bytes], ...] = (),
    idle_ms: int = IDLE_MS,
    absolute_ms: int = ABSOLUTE_MS,
) -> Create:
    return Create(
        token_hash=token_hash(n),
        handle=f"h{n}" if handle is None else handle,
        principal=principal,
        attributes=attributes,
        idle_timeout_ms=idle_ms,
        absolute_timeout_ms=absolute_ms,
    )


def update(
    n: int,
    set_: tuple[tuple[str, bytes], ...] = (),
    delete: tuple[str, ...] = (),
    expected_version: int | None = None,
) -> Update:
    return Update(token_hash(n), set=set_, delete=delete, expected_version=expected_version)


def snapshot_parts(m: SessionMachine) -> dict[str, Any]:
    return msgpack.unpackb(m.snapshot(), raw=False)  # type: ignore[no-any-return]


def assert_indexes_consistent(m: SessionMachine) -> None:
    assert len(m.by_handle) == len(m.sessions)
    for key, s in m.sessions.items():
        assert s.token_hash == key
        assert m.by_handle[s.handle] == key
        if s.principal is not None:
            assert key in m.by_principal[s.principal]
    for principal, index in m.by_principal.items():
        assert index, f"empty index left for {principal!r}"
        for key in index:
            assert m.sessions[key].principal == principal


@pytest.fixture
def new_machine() -> MachineFactory:
    def make(**limits: Any) -> SessionMachine:
        return SessionMachine(Limits(**limits))

    return make


# --------------------------------------------------------------------------- create / read


def test_create_then_read_returns_session_with_attributes_and_version_one(
    new_machine: MachineFactory,
) -> None:
    m = new_machine()
    r = run(m, create(1, principal="alice", attributes=(("b", b"2"), ("a", b"1"))), 1_000)
    assert r.code is Code.OK
    assert r.session is not None
    assert r.session.handle == "h1"
    assert r.session.version == 1
    assert r.session.created_ms == r.session.last_access_ms == 1_000
    assert r.session.absolute_deadline_ms == 1_000 + ABSOLUTE_MS
    assert r.session.attributes == ()  # the create reply is metadata only

    got = m.read(token_hash(1), 1_000)
    assert got.code is Code.OK
    assert got.session is not None
    assert got.session.principal == "alice"
    assert got.session.attributes == (("a", b"1"), ("b", b"2"))
    assert m.list_principal("alice", 1_000)[0].handle == "h1"


def test_create_with_existing_token_hash_returns_already_exists_and_changes_nothing(
    new_machine: MachineFactory,
) -> None:
    m = new_machine()
    run(m, create(1), 0)
    before = m.snapshot()
    r = run(m, create(1, handle="other"), 0)
    assert r.code is Code.ALREADY_EXISTS
    assert m.snapshot() == before


def test_create_with_existing_handle_returns_already_exists_and_changes_nothing(
    new_machine: MachineFactory,
) -> None:
    m = new_machine()
    run(m, create(1, handle="same"), 0)
    before = m.snapshot()
    assert run(m, create(2, handle="same"), 0).code is Code.ALREADY_EXISTS
    assert m.snapshot() == before


def test_create_over_an_expired_session_with_same_hash_starts_a_fresh_session(
    new_machine: MachineFactory,
) -> None:
    m = new_machine()
    run(m, create(1, attributes=(("old", b"x"),)), 0)
    r = run(m, create(1, handle="fresh"), IDLE_MS)
    assert r.code is Code.OK
    got = m.read(token_hash(1), IDLE_MS)
    assert got.session is not None
    assert got.session.handle == "fresh"
    assert got.session.attributes == ()
    assert "h1" not in m.by_handle


def test_read_of_unknown_hash_returns_not_found(new_machine: MachineFactory) -> None:
    assert new_machine().read(token_hash(9), 0).code is Code.NOT_FOUND


def test_read_of_malformed_hash_returns_invalid(new_machine: MachineFactory) -> None:
    assert new_machine().read(b"short", 0).code is Code.INVALID


# --------------------------------------------------------------------------------- update


def test_update_sets_and_deletes_attributes_and_bumps_version(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, attributes=(("keep", b"k"), ("drop", b"d"), ("change", b"old"))), 0)
    r = run(m, update(1, set_=(("change", b"new"), ("add", b"a")), delete=("drop", "absent")), 10)
    assert r.code is Code.OK
    assert r.session is not None
    assert r.session.version == 2
    assert r.session.last_access_ms == 10
    got = m.read(token_hash(1), 10)
    assert got.session is not None
    assert got.session.attributes == (("add", b"a"), ("change", b"new"), ("keep", b"k"))


def test_update_with_name_in_both_set_and_delete_ends_with_the_set_value(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, attributes=(("a", b"old"),)), 0)
    assert run(m, update(1, set_=(("a", b"new"),), delete=("a",)), 0).ok
    got = m.read(token_hash(1), 0)
    assert got.session is not None
    assert got.session.attributes == (("a", b"new"),)


def test_update_with_matching_expected_version_applies(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1), 0)
    assert run(m, update(1, set_=(("a", b"1"),)), 0).ok
    r = run(m, update(1, set_=(("a", b"2"),), expected_version=2), 0)
    assert r.code is Code.OK
    assert r.session is not None
    assert r.session.version == 3


def test_update_with_stale_expected_version_returns_conflict_and_changes_nothing(
    new_machine: MachineFactory,
) -> None:
    m = new_machine()
    run(m, create(1, attributes=(("a", b"1"),)), 0)
    run(m, update(1, set_=(("a", b"2"),)), 5)
    before = m.snapshot()
    r = run(m, update(1, set_=(("a", b"lost"),), delete=("a",), expected_version=1), 5)
    assert r.code is Code.VERSION_CONFLICT
    assert "expected version 1" in r.message
    assert "version 2" in r.message
    assert r.session is None
    assert m.snapshot() == before


def test_update_of_unknown_session_returns_not_found_and_creates_nothing(new_machine: MachineFactory) -> None:
    m = new_machine()
    before = m.snapshot()
    assert run(m, update(1, set_=(("a", b"1"),)), 0).code is Code.NOT_FOUND
    assert m.snapshot() == before


def test_update_with_duplicate_name_in_set_returns_invalid_and_changes_nothing(
    new_machine: MachineFactory,
) -> None:
    m = new_machine()
    run(m, create(1), 0)
    before = m.snapshot()
    assert run(m, update(1, set_=(("a", b"1"), ("a", b"2"))), 0).code is Code.INVALID
    assert m.snapshot() == before


# ---------------------------------------------------------------------------------- touch


def test_touch_moves_last_access_and_keeps_version(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, attributes=(("a", b"1"),)), 0)
    r = run(m, Touch(token_hash(1)), 400)
    assert r.code is Code.OK
    assert r.session is not None
    assert r.session.last_access_ms == 400
    assert r.session.version == 1
    assert r.session.attributes == ()


def test_touch_with_attributes_returns_them(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, attributes=(("a", b"1"),)), 0)
    r = run(m, Touch(token_hash(1), with_attributes=True), 1)
    assert r.session is not None
    assert r.session.attributes == (("a", b"1"),)


def test_touch_keeps_an_idle_session_alive_past_its_first_idle_deadline(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1), 0)
    run(m, Touch(token_hash(1)), IDLE_MS - 1)
    assert m.read(token_hash(1), IDLE_MS + 500).code is Code.OK


# --------------------------------------------------------------------------------- rotate


def test_rotate_old_hash_stops_working_and_new_hash_keeps_data_handle_and_deadline(
    new_machine: MachineFactory,
) -> None:
    m = new_machine()
    run(m, create(1, attributes=(("cart", b"3 items"),)), 0)
    r = run(m, Rotate(token_hash(1), token_hash(2), None), 100)
    assert r.code is Code.OK
    assert r.session is not None
    assert r.session.version == 2
    assert r.session.handle == "h1"
    assert r.session.created_ms == 0
    assert r.session.absolute_deadline_ms == ABSOLUTE_MS

    assert m.read(token_hash(1), 100).code is Code.NOT_FOUND
    assert run(m, Touch(token_hash(1)), 100).code is Code.NOT_FOUND
    assert run(m, update(1, set_=(("x", b"y"),)), 100).code is Code.NOT_FOUND
    got = m.read(token_hash(2), 100)
    assert got.session is not None
    assert got.session.attributes == (("cart", b"3 items"),)
    assert m.by_handle["h1"] == token_hash(2)
    assert token_hash(1) not in m.sessions
    assert_indexes_consistent(m)


def test_rotate_at_login_binds_principal_and_the_principal_index_follows(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1), 0)  # anonymous session before login
    r = run(m, Rotate(token_hash(1), token_hash(2), "alice"), 10)
    assert r.session is not None
    assert r.session.principal == "alice"
    assert [v.handle for v in m.list_principal("alice", 10)] == ["h1"]

    # A privilege change moves the session to another principal; nothing stays behind.
    run(m, Rotate(token_hash(2), token_hash(3), "bob"), 20)
    assert m.list_principal("alice", 20) == []
    assert "alice" not in m.by_principal
    assert [v.handle for v in m.list_principal("bob", 20)] == ["h1"]
    assert_indexes_consistent(m)


def test_rotate_with_no_principal_keeps_the_current_one(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, principal="alice"), 0)
    r = run(m, Rotate(token_hash(1), token_hash(2), None), 0)
    assert r.session is not None
    assert r.session.principal == "alice"
    assert list(m.by_principal["alice"]) == [token_hash(2)]


def test_rotate_to_a_hash_in_use_returns_already_exists_and_changes_nothing(
    new_machine: MachineFactory,
) -> None:
    m = new_machine()
    run(m, create(1), 0)
    run(m, create(2), 0)
    before = m.snapshot()
    assert run(m, Rotate(token_hash(1), token_hash(2), None), 0).code is Code.ALREADY_EXISTS
    assert run(m, Rotate(token_hash(1), token_hash(1), None), 0).code is Code.ALREADY_EXISTS
    assert m.snapshot() == before


# --------------------------------------------------------------------------------- delete


def test_delete_by_hash_is_idempotent(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, principal="alice"), 0)
    first = run(m, Delete(token_hash(1), None), 1)
    assert first.code is Code.OK
    assert first.existed is True
    second = run(m, Delete(token_hash(1), None), 2)
    assert second.code is Code.OK
    assert second.existed is False
    assert m.read(token_hash(1), 2).code is Code.NOT_FOUND
    assert m.sessions == {}
    assert m.by_handle == {}
    assert m.by_principal == {}


def test_delete_by_handle_is_idempotent(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, principal="alice"), 0)
    run(m, create(2, principal="alice"), 0)
    assert run(m, Delete(None, "h1"), 1).existed is True
    assert run(m, Delete(None, "h1"), 2).existed is False
    assert m.read(token_hash(1), 2).code is Code.NOT_FOUND
    assert m.read(token_hash(2), 2).code is Code.OK
    assert [v.handle for v in m.list_principal("alice", 2)] == ["h2"]
    assert_indexes_consistent(m)


def test_delete_of_expired_session_removes_it_and_reports_not_existed(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, principal="alice"), 0)
    r = run(m, Delete(token_hash(1), None), IDLE_MS)
    assert r.code is Code.OK
    assert r.existed is False
    assert m.sessions == {}
    assert m.by_principal == {}


@pytest.mark.parametrize(
    "op",
    [Delete(None, None), Delete(token_hash(1), "h1"), Delete(b"short", None)],
    ids=["neither", "both", "bad-hash"],
)
def test_delete_without_exactly_one_valid_key_returns_invalid_and_changes_nothing(
    new_machine: MachineFactory, op: Delete
) -> None:
    m = new_machine()
    run(m, create(1), 0)
    before = m.snapshot()
    assert run(m, op, 0).code is Code.INVALID
    assert m.snapshot() == before


# ------------------------------------------------------------------------ list and revoke


def test_list_principal_is_sorted_by_creation_and_holds_metadata_only(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(3, handle="hz", principal="alice", attributes=(("secret", b"s"),)), 10)
    run(m, create(1, handle="hb", principal="alice"), 20)
    run(m, create(2, handle="ha", principal="alice"), 20)
    run(m, create(4, handle="other", principal="bob"), 20)
    views = m.list_principal("alice", 20)
    assert [v.handle for v in views] == ["hz", "ha", "hb"]
    assert all(v.attributes == () for v in views)
    assert all(v.principal == "alice" for v in views)
    hashes = [token_hash(n) for n in (1, 2, 3)]
    for view in views:
        wire = msgpack.packb(reply_to_wire(Reply(Code.OK, session=view)), use_bin_type=True)
        for h in hashes:
            assert h not in wire
            assert h.hex() not in repr(view)
            assert repr(h) not in repr(view)


def test_list_principal_leaves_out_expired_sessions(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, principal="alice", idle_ms=100, absolute_ms=100), 0)
    run(m, create(2, principal="alice"), 50)
    assert [v.handle for v in m.list_principal("alice", 100)] == ["h2"]
    assert m.list_principal("nobody", 100) == []


def test_revoke_principal_ends_all_its_sessions_and_reports_handles(new_machine: MachineFactory) -> None:
    m = new_machine()
    for n in (3, 1, 2):
        run(m, create(n, principal="alice"), n)
    run(m, create(4, principal="bob"), 4)
    r = run(m, RevokePrincipal("alice", None), 5)
    assert r.code is Code.OK
    assert r.handles == ("h1", "h2", "h3")
    assert m.list_principal("alice", 5) == []
    assert "alice" not in m.by_principal
    for n in (1, 2, 3):
        assert m.read(token_hash(n), 5).code is Code.NOT_FOUND
    assert m.read(token_hash(4), 5).code is Code.OK
    assert_indexes_consistent(m)


def test_revoke_principal_except_one_handle_keeps_only_that_session(new_machine: MachineFactory) -> None:
    m = new_machine()
    for n in (1, 2, 3):
        run(m, create(n, principal="alice"), n)
    r = run(m, RevokePrincipal("alice", "h2"), 5)
    assert r.handles == ("h1", "h3")
    assert [v.handle for v in m.list_principal("alice", 5)] == ["h2"]
    assert m.read(token_hash(2), 5).code is Code.OK
    assert_indexes_consistent(m)


def test_revoke_principal_reports_only_live_sessions_but_removes_expired_ones(
    new_machine: MachineFactory,
) -> None:
    m = new_machine()
    run(m, create(1, principal="alice", idle_ms=10, absolute_ms=10), 0)
    run(m, create(2, principal="alice"), 0)
    r = run(m, RevokePrincipal("alice", None), 10)
    assert r.handles == ("h2",)
    assert m.sessions == {}
    assert m.by_principal == {}


def test_revoke_of_unknown_principal_is_ok_and_empty(new_machine: MachineFactory) -> None:
    m = new_machine()
    r = run(m, RevokePrincipal("nobody", None), 0)
    assert r.code is Code.OK
    assert r.handles == ()


# ---------------------------------------------------------------------- no resurrection


@pytest.mark.parametrize(
    "late",
    [
        Touch(token_hash(1)),
        Touch(token_hash(1), with_attributes=True),
        update(1, set_=(("a", b"late"),)),
        update(1, set_=(("a", b"late"),), expected_version=1),
        Rotate(token_hash(1), token_hash(2), None),
        Rotate(token_hash(1), token_hash(2), "alice"),
    ],
    ids=["touch", "touch-validate", "update", "update-cas", "rotate", "rotate-login"],
)
@pytest.mark.parametrize("ending", ["delete", "idle-expiry", "absolute-expiry", "sweep"])
def test_command_on_deleted_or_expired_session_returns_not_found_and_creates_nothing(
    new_machine: MachineFactory, late: Op, ending: str
) -> None:
    m = new_machine()
    run(m, create(1, principal="alice", attributes=(("a", b"1"),), idle_ms=100, absolute_ms=300), 0)
    if ending == "delete":
        run(m, Delete(token_hash(1), None), 50)
        now = 50
    elif ending == "idle-expiry":
        now = 100
    elif ending == "absolute-expiry":
        for t in (80, 160, 240):
            run(m, Touch(token_hash(1)), t)
        now = 300
    else:
        run(m, Expire(10), 100)
        now = 100
    r = run(m, late, now)
    assert r.code is Code.NOT_FOUND
    assert r.session is None
    assert m.sessions == {}
    assert m.by_handle == {}
    assert m.by_principal == {}
    assert m.read(token_hash(1), now).code is Code.NOT_FOUND
    assert m.read(token_hash(2), now).code is Code.NOT_FOUND


def test_late_update_with_fresh_sequence_after_delete_does_not_resurrect(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1), 0, CLIENT_A, 1)
    assert run(m, update(1, set_=(("a", b"1"),)), 10, CLIENT_A, 2).ok
    assert run(m, Delete(token_hash(1), None), 20, CLIENT_B, 1).existed
    late = run(m, update(1, set_=(("a", b"2"),)), 30, CLIENT_A, 3)
    assert late.code is Code.NOT_FOUND
    assert m.read(token_hash(1), 30).code is Code.NOT_FOUND
    assert m.sessions == {}


def test_retry_of_an_update_applied_before_delete_returns_first_reply_without_resurrecting(
    new_machine: MachineFactory,
) -> None:
    m = new_machine()
    run(m, create(1), 0)
    first = run(m, update(1, set_=(("a", b"1"),)), 10, CLIENT_A, 7)
    run(m, Delete(token_hash(1), None), 20)
    again = run(m, update(1, set_=(("a", b"1"),)), 30, CLIENT_A, 7)
    assert again == first
    assert m.sessions == {}


# -------------------------------------------------------------------------- no extension


def test_touches_never_move_the_absolute_deadline(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, idle_ms=100, absolute_ms=1_000), 0)
    for t in range(50, 1_000, 50):
        r = run(m, Touch(token_hash(1)), t)
        assert r.session is not None
        assert r.session.absolute_deadline_ms == 1_000
    assert m.read(token_hash(1), 999).code is Code.OK
    got = m.read(token_hash(1), 1_000)
    assert got.code is Code.NOT_FOUND
    assert "absolute" in got.message
    assert run(m, Touch(token_hash(1)), 1_000).code is Code.NOT_FOUND


def test_continuously_touched_session_is_swept_at_its_absolute_deadline(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, idle_ms=100, absolute_ms=1_000), 0)
    for t in range(50, 1_000, 50):
        run(m, Touch(token_hash(1)), t)
        assert run(m, Expire(10), t).count == 0
    assert run(m, Expire(10), 1_000).count == 1
    assert m.sessions == {}


def test_rotations_and_updates_never_move_the_absolute_deadline(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(0, idle_ms=100, absolute_ms=500), 0)
    for n in range(1, 10):
        r = run(m, Rotate(token_hash(n - 1), token_hash(n), f"p{n}"), n * 50)
        assert r.session is not None
        assert r.session.absolute_deadline_ms == 500
        r = run(m, update(n, set_=(("n", str(n).encode()),)), n * 50 + 1)
        assert r.session is not None
        assert r.session.absolute_deadline_ms == 500
    assert m.read(token_hash(9), 500).code is Code.NOT_FOUND


def test_idle_expiry_happens_at_last_access_plus_idle(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, idle_ms=100), 0)
    run(m, Touch(token_hash(1)), 70)
    assert m.read(token_hash(1), 169).code is Code.OK
    got = m.read(token_hash(1), 170)
    assert got.code is Code.NOT_FOUND
    assert "idle" in got.message
    assert run(m, Touch(token_hash(1)), 170).code is Code.NOT_FOUND


# ----------------------------------------------------------------------------------- time


def test_create_stamped_earlier_than_previous_entry_uses_previous_time(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, Barrier(), 5_000)
    r = run(m, create(1), 1_000)
    assert r.session is not None
    assert r.session.created_ms == 5_000
    assert r.session.absolute_deadline_ms == 5_000 + ABSOLUTE_MS
    assert m.now_ms == 5_000


def test_touch_stamped_earlier_than_previous_entry_does_not_move_last_access_back(
    new_machine: MachineFactory,
) -> None:
    m = new_machine()
    run(m, create(1, idle_ms=100), 0)
    run(m, Touch(token_hash(1)), 90)
    r = run(m, Touch(token_hash(1)), 10)
    assert r.session is not None
    assert r.session.last_access_ms == 90
    assert m.read(token_hash(1), 189).code is Code.OK


def test_entry_stamped_earlier_still_sees_sessions_expired_at_previous_time(
    new_machine: MachineFactory,
) -> None:
    m = new_machine()
    run(m, create(1, idle_ms=100), 0)
    run(m, Barrier(), 100)
    # A new leader with a slower clock cannot bring an expired session back.
    assert run(m, Touch(token_hash(1)), 50).code is Code.NOT_FOUND


def test_read_with_earlier_clock_than_applied_time_uses_applied_time(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, idle_ms=100), 0)
    run(m, Barrier(), 100)
    assert m.read(token_hash(1), 0).code is Code.NOT_FOUND


# ---------------------------------------------------------------------------- exactly-once


def test_retry_with_same_sequence_returns_identical_reply_and_applies_once(
    new_machine: MachineFactory,
) -> None:
    m = new_machine()
    run(m, create(1), 0)
    first = run(m, update(1, set_=(("n", b"1"),)), 10, CLIENT_A, 1)
    again = run(m, update(1, set_=(("n", b"1"),)), 20, CLIENT_A, 1)
    assert again == first
    assert first.session is not None
    assert first.session.version == 2
    got = m.read(token_hash(1), 20)
    assert got.session is not None
    assert got.session.version == 2


def test_retry_of_create_returns_the_first_ok_not_already_exists(new_machine: MachineFactory) -> None:
    m = new_machine()
    first = run(m, create(1), 0, CLIENT_A, 1)
    again = run(m, create(1), 5, CLIENT_A, 1)
    assert first.code is Code.OK
    assert again == first


def test_retry_of_refused_command_returns_the_same_refusal(new_machine: MachineFactory) -> None:
    m = new_machine()
    first = run(m, update(1, set_=(("a", b"1"),)), 0, CLIENT_A, 1)
    assert first.code is Code.NOT_FOUND
    run(m, create(1), 1)
    # The first answer stands even though the command would now succeed.
    assert run(m, update(1, set_=(("a", b"1"),)), 2, CLIENT_A, 1) == first
    got = m.read(token_hash(1), 2)
    assert got.session is not None
    assert got.session.version == 1


def test_older_sequence_returns_stale_sequence_and_applies_nothing(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1), 0)
    first = run(m, update(1, set_=(("n", b"5"),)), 10, CLIENT_A, 5)
    before = m.snapshot()
    r = run(m, update(1, set_=(("n", b"4"),)), 10, CLIENT_A, 4)
    assert r.code is Code.STALE_SEQUENCE
    assert "4" in r.message
    assert "5" in r.message
    assert m.snapshot() == before
    # The stale attempt did not replace the remembered answer for sequence 5.
    assert run(m, update(1, set_=(("n", b"5"),)), 10, CLIENT_A, 5) == first


def test_sequences_are_tracked_per_client(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1), 0)
    run(m, update(1, set_=(("a", b"1"),)), 0, CLIENT_A, 9)
    r = run(m, update(1, set_=(("b", b"1"),)), 0, CLIENT_B, 1)
    assert r.code is Code.OK
    assert r.session is not None
    assert r.session.version == 3


def test_commands_without_client_id_are_never_deduplicated(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1), 0)
    run(m, update(1, set_=(("a", b"1"),)), 0)
    r = run(m, update(1, set_=(("a", b"1"),)), 0)
    assert r.session is not None
    assert r.session.version == 3
    assert snapshot_parts(m)["dedup"] == []


def test_dedup_table_evicts_least_recently_used_client_beyond_max_dedup_clients(
    new_machine: MachineFactory,
) -> None:
    m = new_machine(max_dedup_clients=2)
    run(m, create(1), 0)
    run(m, update(1, set_=(("a", b"1"),)), 1, CLIENT_A, 1)
    run(m, update(1, set_=(("b", b"1"),)), 2, CLIENT_B, 1)
    run(m, update(1, set_=(("a", b"2"),)), 3, CLIENT_A, 2)  # A is now the most recent
    run(m, update(1, set_=(("c", b"1"),)), 4, CLIENT_C, 1)  # the table is full: B goes
    assert [row[0] for row in snapshot_parts(m)["dedup"]] == [CLIENT_A, CLIENT_C]
    version = 5

    # A and C are remembered: their retries apply nothing.
    assert run(m, update(1, set_=(("a", b"2"),)), 5, CLIENT_A, 2).session is not None
    assert run(m, update(1, set_=(("c", b"1"),)), 5, CLIENT_C, 1).session is not None
    got = m.read(token_hash(1), 5)
    assert got.session is not None
    assert got.session.version == version
    # B was forgotten: its retry applies again (the documented cost of a bounded table).
    r = run(m, update(1, set_=(("b", b"1"),)), 6, CLIENT_B, 1)
    assert r.session is not None
    assert r.session.version == version + 1
    assert len(snapshot_parts(m)["dedup"]) == 2


def test_dedup_entries_expire_after_ttl_only_at_an_expire_command(new_machine: MachineFactory) -> None:
    m = new_machine(dedup_ttl_ms=1_000)
    run(m, create(1, idle_ms=100_000, absolute_ms=100_000), 0)
    run(m, update(1, set_=(("a", b"1"),)), 0, CLIENT_A, 1)
    run(m, update(1, set_=(("b", b"1"),)), 500, CLIENT_B, 1)

    # Past the TTL but no expire command yet: A is still remembered.
    run(m, Barrier(), 1_001)
    assert [row[0] for row in snapshot_parts(m)["dedup"]] == [CLIENT_A, CLIENT_B]

    run(m, Expire(10), 1_001)
    assert [row[0] for row in snapshot_parts(m)["dedup"]] == [CLIENT_B]
    run(m, Expire(10), 1_501)
    assert snapshot_parts(m)["dedup"] == []
    # Forgotten: an older sequence is no longer recognised as stale, it applies.
    r = run(m, update(1, set_=(("a", b"0"),)), 1_501, CLIENT_A, 0)
    assert r.code is Code.OK
    assert r.session is not None
    assert r.session.version == 4


def test_dedup_retry_refreshes_its_entry_so_a_retrying_client_is_not_forgotten(
    new_machine: MachineFactory,
) -> None:
    m = new_machine(dedup_ttl_ms=1_000)
    run(m, create(1, idle_ms=100_000, absolute_ms=100_000), 0)
    first = run(m, update(1, set_=(("a", b"1"),)), 0, CLIENT_A, 1)
    run(m, update(1, set_=(("b", b"1"),)), 500, CLIENT_B, 1)

    assert run(m, update(1, set_=(("a", b"1"),)), 900, CLIENT_A, 1) == first
    assert [row[0] for row in snapshot_parts(m)["dedup"]] == [CLIENT_B, CLIENT_A]
    run(m, Expire(10), 1_501)  # B idle 1,001 ms: gone; A refreshed at 900: kept
    assert [row[0] for row in snapshot_parts(m)["dedup"]] == [CLIENT_A]
    assert run(m, update(1, set_=(("a", b"1"),)), 1_501, CLIENT_A, 1) == first
    assert run(m, Barrier(), 1_501).code is Code.OK
    assert m.read(token_hash(1), 1_501).session.version == 3  # type: ignore[union-attr]


def test_dedup_ttl_boundary_keeps_entry_exactly_at_ttl(new_machine: MachineFactory) -> None:
    m = new_machine(dedup_ttl_ms=1_000)
    run(m, create(1, idle_ms=100_000, absolute_ms=100_000), 0)
    run(m, update(1, set_=(("a", b"1"),)), 0, CLIENT_A, 1)
    run(m, Expire(10), 1_000)
    assert len(snapshot_parts(m)["dedup"]) == 1
    run(m, Expire(10), 1_001)
    assert snapshot_parts(m)["dedup"] == []


# ---------------------------------------------------------------------------- expire sweeps


def test_expire_removes_at_most_limit_sessions_earliest_deadline_first(new_machine: MachineFactory) -> None:
    m = new_machine()
    # Creation order, hash order and deadline order all differ.
    for n, idle in [(1, 500), (2, 100), (3, 400), (4, 200), (5, 300)]:
        run(m, create(n, principal="alice", idle_ms=idle, absolute_ms=1_000), 0)
    r = run(m, Expire(2), 1_000)
    assert r.code is Code.OK
    assert r.count == 2
    assert sorted(m.by_handle) == ["h1", "h3", "h5"]
    assert run(m, Expire(2), 1_000).count == 2
    assert sorted(m.by_handle) == ["h1"]
    assert run(m, Expire(2), 1_000).count == 1
    assert m.sessions == {}
    assert m.by_handle == {}
    assert m.by_principal == {}


def test_expire_breaks_deadline_ties_by_token_hash(new_machine: MachineFactory) -> None:
    m = new_machine()
    for n in range(1, 6):
        run(m, create(n, idle_ms=100), 0)
    run(m, Expire(1), 100)
    smallest = min(token_hash(n) for n in range(1, 6))
    assert smallest not in m.sessions
    assert len(m.sessions) == 4


def test_expire_leaves_no_index_entries_behind(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, principal="alice", idle_ms=100), 0)
    run(m, create(2, principal="alice", idle_ms=300), 0)
    run(m, create(3, principal="bob", idle_ms=100), 0)
    run(m, create(4, idle_ms=100), 0)
    assert run(m, Expire(100), 100).count == 3
    assert list(m.sessions) == [token_hash(2)]
    assert m.by_handle == {"h2": token_hash(2)}
    assert m.by_principal == {"alice": (token_hash(2),)}
    assert_indexes_consistent(m)


def test_expire_removes_a_session_exactly_at_its_deadline_and_not_before(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, idle_ms=100), 0)
    assert run(m, Expire(10), 99).count == 0
    assert run(m, Expire(10), 100).count == 1


def test_session_touched_after_its_first_expiry_entry_is_not_swept_early(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, idle_ms=100), 0)
    run(m, Touch(token_hash(1)), 60)
    assert run(m, Expire(10), 120).count == 0
    assert m.read(token_hash(1), 120).code is Code.OK
    assert run(m, Expire(10), 160).count == 1


def test_session_updated_or_rotated_after_its_first_expiry_entry_is_not_swept_early(
    new_machine: MachineFactory,
) -> None:
    m = new_machine()
    run(m, create(1, idle_ms=100), 0)
    run(m, create(2, idle_ms=100), 0)
    run(m, update(1, set_=(("a", b"1"),)), 60)
    run(m, Rotate(token_hash(2), token_hash(3), None), 60)
    assert run(m, Expire(10), 120).count == 0
    assert m.read(token_hash(1), 120).code is Code.OK
    assert m.read(token_hash(3), 120).code is Code.OK
    assert run(m, Expire(10), 160).count == 2


def test_stale_expiry_entries_do_not_use_up_the_sweep_limit(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, idle_ms=100), 0)
    for t in (10, 20, 30):
        run(m, Touch(token_hash(1)), t)  # stale heap entries at 100, 110 and 120; due at 130
    run(m, create(2, idle_ms=140), 0)
    run(m, create(3, idle_ms=150), 0)
    assert run(m, Expire(2), 200).count == 2
    assert list(m.sessions) == [token_hash(3)]


def test_expire_with_nothing_due_is_ok_and_counts_zero(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1), 0)
    before = m.snapshot()
    r = run(m, Expire(10), 0)
    assert r.code is Code.OK
    assert r.count == 0
    assert m.snapshot() == before


def test_barrier_changes_no_session(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1), 0)
    before = m.snapshot()
    assert run(m, Barrier(), 0) == Reply(Code.OK)
    assert m.snapshot() == before


# -------------------------------------------------------------------------------- snapshot


def test_restore_from_snapshot_reproduces_state_and_exactly_once_answers(new_machine: MachineFactory) -> None:
    m = new_machine()
    run(m, create(1, principal="alice", attributes=(("a", b"1"),)), 0)
    first = run(m, update(1, set_=(("b", b"2"),)), 10, CLIENT_A, 3)
    restored = new_machine()
    restored.restore(m.snapshot())
    assert restored.snapshot() == m.snapshot()
    assert restored.digest() == m.digest()
    assert restored.now_ms == 10
    assert run(restored, update(1, set_=(("b", b"2"),)), 20, CLIENT_A, 3) == first
    assert run(restored, update(1, set_=(("b", b"2"),)), 20, CLIENT_A, 2).code is Code.STALE_SEQUENCE
    assert restored.read(token_hash(1), 20) == m.read(token_hash(1), 20)
    assert_indexes_consistent(restored)


def test_restore_of_unknown_snapshot_format_raises(new_machine: MachineFactory) -> None:
    data = msgpack.packb({"format": 99, "now_ms": 0, "sessions": [], "dedup": []}, use_bin_type=True)
    with pytest.raises(ValueError, match="format"):
        new_machine().restore(data)

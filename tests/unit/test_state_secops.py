"""Session-security operations in the pure state machine (command level 5, store/secops.py).

Tombstones (no reuse of an ended session's token hash), rotation grace and reuse detection,
disabled principals, timeout profiles; each with its bound, its snapshot round trip and the
canary that the rule is off before the cluster switched level 5 on.
"""

from __future__ import annotations

import hashlib

import pytest

from sessionquorum.store import commands as c
from sessionquorum.store.config import DAY_MS, Limits, limits_to_wire
from sessionquorum.store.replies import Code, Reply
from sessionquorum.store.state import SessionMachine

IDLE_MS = 1_000
ABSOLUTE_MS = 100_000
GRACE_MS = 500


def th(n: int) -> bytes:
    return hashlib.sha256(f"token-{n}".encode()).digest()


def run(m: SessionMachine, op: c.Op, now_ms: int, client: bytes | None = None, seq: int = 0) -> Reply:
    return m.apply(c.encode(c.Command(op, now_ms=now_ms, client_id=client, sequence=seq)))


def create(
    n: int, principal: str | None = None, idle_ms: int = IDLE_MS, absolute_ms: int = ABSOLUTE_MS
) -> c.Create:
    return c.Create(th(n), f"h{n}", principal, (), idle_ms, absolute_ms)


def machine(on: bool = True, **limits: int | str) -> SessionMachine:
    m = SessionMachine(Limits(**{"rotation_grace_ms": GRACE_MS, **limits}))  # type: ignore[arg-type]
    if on:
        assert run(m, c.SecurityOn(), 1).ok
    return m


# ------------------------------------------------------------------ tombstones
@pytest.mark.parametrize("end", ["delete", "revoke", "idle", "rotate", "evict", "disable"])
def test_an_ended_sessions_token_hash_is_refused_for_a_new_session_until_its_old_deadline(end: str) -> None:
    m = machine(max_sessions_per_principal=1)
    assert run(m, create(1, "alice"), 10).ok
    if end == "delete":
        assert run(m, c.Delete(th(1), None), 20).existed
    elif end == "revoke":
        assert run(m, c.RevokePrincipal("alice", None), 20).handles == ("h1",)
    elif end == "idle":
        assert run(m, c.Expire(100), 10 + IDLE_MS).count == 1
    elif end == "rotate":
        assert run(m, c.Rotate(th(1), th(2), None), 20).ok
    elif end == "evict":
        assert run(m, create(2, "alice"), 20).handles == ("h1",)
    else:
        assert run(m, c.SetPrincipalEnabled("alice", False), 20).handles == ("h1",)
        assert run(m, c.SetPrincipalEnabled("alice", True), 21).ok
    reuse = c.Create(th(1), "h-new", None, (), IDLE_MS, ABSOLUTE_MS)
    refused = run(m, reuse, 10 + ABSOLUTE_MS - 1)
    assert refused.code is Code.ALREADY_EXISTS and "ended" in refused.message
    assert m.event_counts()["tombstone_refused"] == 1
    # A rotation onto it is refused the same way.
    assert run(m, create(3), 10 + ABSOLUTE_MS - 1).ok
    assert run(m, c.Rotate(th(3), th(1), None), 10 + ABSOLUTE_MS - 1).code is Code.ALREADY_EXISTS
    # From the old absolute deadline on, the hash is free again.
    assert run(m, reuse, 10 + ABSOLUTE_MS).ok


def test_before_level_5_is_switched_on_a_deleted_hash_is_reusable_as_older_releases_apply_it_canary() -> None:
    m = machine(on=False)
    assert run(m, create(1), 10).ok
    assert run(m, c.Delete(th(1), None), 20).existed
    assert run(m, create(1), 30).ok
    assert not m.sec.tombstones


def test_an_absolutely_expired_session_leaves_no_tombstone() -> None:
    m = machine()
    assert run(m, create(1, idle_ms=IDLE_MS, absolute_ms=IDLE_MS), 10).ok
    assert run(m, c.Expire(100), 10 + IDLE_MS).count == 1
    assert not m.sec.tombstones
    assert run(m, create(1), 10 + IDLE_MS).ok


def test_tombstones_are_swept_at_their_deadline_by_the_expire_command() -> None:
    m = machine()
    for n in range(5):
        assert run(m, create(n, absolute_ms=ABSOLUTE_MS + n), 10).ok
    for n in range(5):
        assert run(m, c.Delete(th(n), None), 11).ok
    assert len(m.sec.tombstones) == 5
    run(m, c.Expire(1000), 10 + ABSOLUTE_MS + 2)  # deadlines +0, +1, +2 passed
    assert sorted(m.sec.tombstones) == sorted([th(3), th(4)])


def test_tombstones_are_capped_and_the_oldest_goes_first() -> None:
    m = machine(max_tombstones=3)
    for n in range(5):
        assert run(m, create(n), 10 + n).ok
        assert run(m, c.Delete(th(n), None), 10 + n).ok
    assert list(m.sec.tombstones) == [th(2), th(3), th(4)]
    assert m.sec.tombstones_evicted == 2
    assert run(m, create(0), 20).ok  # evicted: reusable
    assert run(m, create(2), 20).code is Code.ALREADY_EXISTS


# ---------------------------------------------------------- rotation grace, reuse
def rotated(**limits: int | str) -> SessionMachine:
    m = machine(**limits)
    assert run(m, create(1, "alice"), 10).ok
    assert run(m, c.Update(th(1), (("cart", b"3"),), (), None), 11).ok
    assert run(m, c.Rotate(th(1), th(2), None, grace=True), 100).ok
    return m


def test_the_old_token_serves_the_rotated_session_within_the_grace() -> None:
    m = rotated()
    now = 100 + GRACE_MS - 1
    seen = m.read(th(1), now)
    assert seen.ok and seen.session is not None and seen.session.handle == "h1"
    assert dict(seen.session.attributes) == {"cart": b"3"}
    assert run(m, c.Touch(th(1)), now).ok
    updated = run(m, c.Update(th(1), (("cart", b"4"),), (), None), now)
    assert updated.ok
    assert m.read(th(2), now).session.attributes == (("cart", b"4"),)  # type: ignore[union-attr]
    assert not m.reused(th(1), now)
    assert m.event_counts()["reuse_detected"] == 0


def test_a_use_of_the_old_token_after_the_grace_is_not_found_and_recorded_once() -> None:
    m = rotated()
    after = 100 + GRACE_MS
    assert m.read(th(1), after).code is Code.NOT_FOUND
    assert m.reused(th(1), after)
    touched = run(m, c.Touch(th(1)), after)
    assert touched.code is Code.NOT_FOUND and touched.message == "session not found"
    assert m.event_counts()["reuse_detected"] == 1
    assert not m.reused(th(1), after)  # reported: reads stop proposing
    assert run(m, c.ReuseDetected(th(1)), after).count == 0
    assert m.event_counts()["reuse_detected"] == 1
    assert m.read(th(2), after).ok  # revoke_on_reuse is off: the new session lives


def test_with_revoke_on_reuse_a_reuse_ends_the_session_it_was_rotated_into() -> None:
    m = rotated(revoke_on_reuse="on")
    after = 100 + GRACE_MS
    detected = run(m, c.ReuseDetected(th(1)), after)
    assert detected.count == 1 and detected.handles == ("h1",)
    assert m.read(th(2), after).code is Code.NOT_FOUND
    assert m.event_counts()["ended_reuse"] == 1
    # The revoked session's hash is tombstoned too.
    assert run(m, c.Create(th(2), "hx", None, (), IDLE_MS, IDLE_MS), after).code is Code.ALREADY_EXISTS


def test_a_reuse_follows_a_chain_of_rotations_to_the_live_session() -> None:
    m = rotated(revoke_on_reuse="on")
    assert run(m, c.Rotate(th(2), th(3), None, grace=True), 200).ok
    assert m.read(th(1), 100 + GRACE_MS - 1).ok  # old -> mid -> new, within both graces
    assert run(m, c.Update(th(1), (), (), None), 200 + GRACE_MS).code is Code.NOT_FOUND
    assert m.read(th(3), 200 + GRACE_MS).code is Code.NOT_FOUND


def test_a_reuse_detected_for_a_token_within_its_grace_or_never_rotated_changes_nothing() -> None:
    m = rotated(revoke_on_reuse="on")
    before = m.digest()
    assert run(m, c.ReuseDetected(th(1)), 100).count == 0
    assert run(m, c.ReuseDetected(th(99)), 100).count == 0
    assert m.digest() == before


@pytest.mark.parametrize("grace", [False, True])
def test_a_login_rotation_ends_the_old_token_at_once_so_a_fixed_token_opens_nothing(grace: bool) -> None:
    m = machine(revoke_on_reuse="on")
    assert run(m, create(1), 10).ok  # the token an attacker fixed in the victim's browser
    assert run(m, c.Rotate(th(1), th(2), "alice", grace=grace), 100).ok  # the victim logs in
    assert m.read(th(1), 100).code is Code.NOT_FOUND  # no grace with a principal binding
    assert run(m, c.Touch(th(1)), 101).code is Code.NOT_FOUND
    # Within the grace a use is taken for a request in flight: not a reuse, nothing revoked.
    assert m.event_counts()["reuse_detected"] == 0 and m.read(th(2), 101).ok
    assert run(m, c.Touch(th(1)), 100 + GRACE_MS).code is Code.NOT_FOUND
    assert m.event_counts()["reuse_detected"] == 1  # after it, a reuse


def test_a_rotation_without_grace_serves_nothing_from_the_old_token() -> None:
    m = machine()
    assert run(m, create(1), 10).ok
    assert run(m, c.Rotate(th(1), th(2), None), 100).ok
    assert m.read(th(1), 100).code is Code.NOT_FOUND
    assert not m.reused(th(1), 100) and m.reused(th(1), 100 + GRACE_MS)


def test_grace_is_a_level_5_field_left_out_of_the_entry_while_false() -> None:
    plain = c.Command(c.Rotate(th(1), th(2), None), 5)
    assert b"grace" not in c.encode(plain) and c.level_of(plain) == 1
    graced = c.Command(c.Rotate(th(1), th(2), None, grace=True), 5)
    assert c.level_of(graced) == c.SECURITY_OPS_LEVEL
    assert c.decode(c.encode(graced)).op == graced.op
    with pytest.raises(c.UndecodableEntry, match="level 5"):
        c.decode(c.encode(graced), supported_level=4)


def test_a_delete_with_the_old_token_within_the_grace_logs_the_session_out() -> None:
    m = rotated()
    assert run(m, c.Delete(th(1), None), 100 + GRACE_MS - 1).existed
    assert m.read(th(2), 100 + GRACE_MS - 1).code is Code.NOT_FOUND


# ------------------------------------------------------------ disabled principals
def test_a_disabled_principal_gets_no_new_session_until_enabled() -> None:
    m = machine()
    assert run(m, create(1, "alice"), 10).ok
    assert run(m, create(2, "alice"), 10).ok
    disabled = run(m, c.SetPrincipalEnabled("alice", False), 20)
    assert disabled.ok and disabled.handles == ("h1", "h2") and not disabled.existed
    assert m.list_principal("alice", 20) == []
    refused = run(m, create(3, "alice"), 30)
    assert refused.code is Code.DISABLED and "disabled" in refused.message
    assert run(m, create(4), 30).ok
    assert run(m, c.Rotate(th(4), th(5), "alice"), 30).code is Code.DISABLED  # a login rotate
    assert run(m, c.SetPrincipalEnabled("alice", False), 31).existed
    assert run(m, c.SetPrincipalEnabled("alice", True), 40).existed
    assert run(m, create(3, "alice"), 50).ok
    assert m.event_counts()["ended_disabled"] == 2


def test_disabled_principals_are_bounded_and_a_full_set_refuses_rather_than_forgets() -> None:
    m = machine(max_disabled_principals=2)
    assert run(m, c.SetPrincipalEnabled("a", False), 10).ok
    assert run(m, c.SetPrincipalEnabled("b", False), 10).ok
    full = run(m, c.SetPrincipalEnabled("c", False), 10)
    assert full.code is Code.QUOTA
    assert sorted(m.sec.disabled) == ["a", "b"]
    assert run(m, c.SetPrincipalEnabled("a", False), 11).ok  # already in: no room needed


def test_a_malformed_principal_is_refused_without_a_state_change() -> None:
    m = machine()
    before = m.digest()
    assert run(m, c.SetPrincipalEnabled("", False), 1).code is Code.INVALID
    assert m.digest() == before


# ------------------------------------------------------------------ profiles
def test_the_high_timeout_profile_caps_idle_and_absolute_timeouts() -> None:
    m = machine(timeout_profile="high")
    made = run(m, create(1, idle_ms=DAY_MS, absolute_ms=30 * DAY_MS), 10)
    assert made.session is not None
    assert made.session.idle_timeout_ms == 5 * 60_000
    assert made.session.absolute_deadline_ms == 10 + 4 * 3_600_000
    upd = run(m, c.Update(th(1), (), (), None, (), DAY_MS), 20)
    assert upd.session is not None and upd.session.idle_timeout_ms == 5 * 60_000
    small = run(m, create(2, idle_ms=IDLE_MS, absolute_ms=ABSOLUTE_MS), 10)
    assert small.session is not None and small.session.idle_timeout_ms == IDLE_MS


def test_a_configure_of_a_level_5_limit_needs_level_5_and_defaults_stay_off_the_wire() -> None:
    assert all(name not in c.LATER_LIMITS for name, _ in limits_to_wire(Limits()))
    assert c.level_of(c.Command(c.Configure(limits_to_wire(Limits())), 0)) == 2
    profiled = c.Configure(limits_to_wire(Limits(timeout_profile="high")))
    assert c.level_of(c.Command(profiled, 0)) == c.SECURITY_OPS_LEVEL
    m = SessionMachine(Limits())
    assert run(m, profiled, 10).ok and m.limits.timeout_profile == "high"
    assert m.sec.active  # the first level-5 entry switches the rules on


# ------------------------------------------------------- determinism, snapshots
def history(m: SessionMachine) -> None:
    for n in range(6):
        run(m, create(n, "alice" if n % 2 else "bob"), 10 + n, client=b"c", seq=n + 1)
    run(m, c.Delete(th(0), None), 20)
    run(m, c.Rotate(th(1), th(11), None, grace=True), 21)
    run(m, c.SetPrincipalEnabled("bob", False), 22)
    run(m, c.Touch(th(1)), 21 + GRACE_MS)  # a reuse
    run(m, c.Expire(100), 30 + IDLE_MS)


def test_replicas_applying_the_same_log_hold_the_same_digest() -> None:
    a, b = machine(max_tombstones=4, revoke_on_reuse="on"), machine(max_tombstones=4, revoke_on_reuse="on")
    history(a)
    history(b)
    assert a.digest() == b.digest()
    assert a.sec.tombstones and a.sec.disabled


def test_a_snapshot_round_trip_keeps_tombstones_their_order_and_disabled_principals() -> None:
    m = machine(max_tombstones=4)
    history(m)
    fresh = SessionMachine(Limits())
    fresh.restore(m.snapshot())
    assert fresh.snapshot() == m.snapshot()
    assert list(fresh.sec.tombstones) == list(m.sec.tombstones)
    assert fresh.sec.disabled == m.sec.disabled and fresh.sec.active
    # And it goes on identically: the same eviction, the same refusals.
    for r in (m, fresh):
        run(r, create(40), 50)
        run(r, c.Delete(th(40), None), 51)
        assert run(r, create(77, "bob"), 52).code is Code.DISABLED
    assert fresh.digest() == m.digest()


def test_a_snapshot_without_level_5_state_is_what_older_releases_wrote_and_loads() -> None:
    m = machine(on=False)
    run(m, create(1), 10)
    run(m, c.Delete(th(1), None), 11)
    data = m.snapshot()
    assert b"secops" not in data
    fresh = SessionMachine(Limits())
    fresh.restore(data)
    assert not fresh.sec.active and fresh.snapshot() == data

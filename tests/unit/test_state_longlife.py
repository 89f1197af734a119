"""State machine rules for a long life: replicated limits, command levels, honest exactly-once,
snapshots captured off the lock, and size refusals before the log.
"""

from __future__ import annotations

import dataclasses

import pytest
from test_state import ABSOLUTE_MS, IDLE_MS, create, token_hash, update

from sessionquorum.store import commands as c
from sessionquorum.store.config import Limits, limits_to_wire
from sessionquorum.store.replies import Code, Reply
from sessionquorum.store.state import SessionMachine

CLIENT_A = b"client-a"


def run(
    m: SessionMachine, op: c.Op, now_ms: int, cid: bytes | None = None, seq: int = 0, epoch: int | None = None
) -> Reply:
    return m.apply(c.encode(c.Command(op, now_ms=now_ms, client_id=cid, sequence=seq, client_epoch_ms=epoch)))


def configure(limits: Limits) -> c.Configure:
    return c.Configure(limits_to_wire(limits))


def increment(n: int) -> c.Update:
    return c.Update(token_hash(n), set=(), delete=(), expected_version=None, increment=(("hits", 1),))


# ------------------------------------------------------------------ replicated limits
def test_configure_replaces_the_limits_apply_uses_from_that_entry_on() -> None:
    m = SessionMachine(Limits())
    assert not m.configured
    assert run(m, configure(Limits(max_sessions_per_principal=2, principal_cap_policy="reject")), 1).ok
    assert m.configured and m.limits.max_sessions_per_principal == 2
    for n in (1, 2):
        assert run(m, create(n, principal="alice"), 2).ok
    assert run(m, create(3, principal="alice"), 3).code is Code.QUOTA


def test_a_seed_never_overrides_limits_an_earlier_configure_set() -> None:
    m = SessionMachine(Limits())
    assert run(m, configure(Limits(max_sessions_per_principal=7)), 1).ok
    assert run(m, c.Configure(limits_to_wire(Limits(max_sessions_per_principal=32)), seed=True), 2).ok
    assert m.limits.max_sessions_per_principal == 7
    fresh = SessionMachine(Limits())
    assert run(fresh, c.Configure(limits_to_wire(Limits(max_sessions_per_principal=3)), seed=True), 1).ok
    assert fresh.limits.max_sessions_per_principal == 3 and fresh.configured


def test_configure_with_an_invalid_or_partial_limit_set_is_refused_and_changes_nothing() -> None:
    m = SessionMachine(Limits())
    bad = dict(limits_to_wire(Limits()))
    bad["max_sessions"] = 0
    assert run(m, c.Configure(tuple(sorted(bad.items()))), 1).code is Code.INVALID
    partial = tuple(p for p in limits_to_wire(Limits()) if p[0] != "max_sessions")
    assert run(m, c.Configure(partial), 2).code is Code.INVALID
    assert m.limits == Limits() and not m.configured


def test_replicated_limits_survive_a_snapshot_and_restore() -> None:
    m = SessionMachine(Limits())
    run(m, configure(Limits(max_sessions_per_principal=3)), 1)
    restored = SessionMachine(Limits())  # a node whose own defaults differ must not matter
    restored.restore(m.snapshot())
    assert restored.limits.max_sessions_per_principal == 3 and restored.configured
    assert restored.digest() == m.digest()


# ------------------------------------------------------------------ command levels
def test_a_node_at_level_1_refuses_to_apply_a_level_2_command() -> None:
    old = SessionMachine(Limits(), supported_level=1)
    entry = c.encode(c.Command(configure(Limits()), now_ms=1))
    with pytest.raises(c.UndecodableEntry, match="needs command level 2"):
        old.apply(entry)
    with pytest.raises(c.UndecodableEntry, match="needs command level 2"):
        old.apply(
            c.encode(c.Command(c.Barrier(), now_ms=1, client_id=CLIENT_A, sequence=1, client_epoch_ms=0))
        )


def test_member_levels_are_recorded_and_bounded() -> None:
    m = SessionMachine(Limits())
    assert run(m, c.MemberLevel("n1", 2), 1).ok
    assert run(m, c.MemberLevel("n1", 1), 2).ok
    assert m.member_levels == {"n1": 1}
    for i in range(100):
        run(m, c.MemberLevel(f"x{i}", 2), 3)
    assert len(m.member_levels) == 64
    assert run(m, c.MemberLevel("one-too-many", 2), 4).code is Code.QUOTA


# ------------------------------------------------------------------ honest exactly-once
def _machine_with_small_dedup() -> SessionMachine:
    m = SessionMachine(Limits())
    run(m, configure(Limits(max_dedup_clients=2, dedup_ttl_ms=1_000)), 1)
    assert run(m, create(1, idle_ms=IDLE_MS * 1000, absolute_ms=ABSOLUTE_MS * 1000), 1).ok
    return m


def _hits(m: SessionMachine) -> bytes:
    return dict(m.sessions[token_hash(1)].pairs()).get("hits", b"0")


def test_retry_after_lru_eviction_is_refused_not_applied_twice() -> None:
    m = _machine_with_small_dedup()
    assert run(m, increment(1), 10, CLIENT_A, 1, epoch=0).ok
    for i in range(2):  # two other clients push A out of a table of two
        assert run(m, c.Barrier(), 11, b"other%d" % i, 1, epoch=0).ok
    retry = run(m, increment(1), 12, CLIENT_A, 1, epoch=0)
    assert retry.code is Code.DEDUP_EXPIRED and retry.count == 12
    assert _hits(m) == b"1"


def test_retry_after_ttl_expiry_is_refused_not_applied_twice() -> None:
    m = _machine_with_small_dedup()
    assert run(m, increment(1), 10, CLIENT_A, 1, epoch=0).ok
    assert run(m, c.Expire(10), 2_000).ok  # idle for 1,990 ms > ttl 1,000 ms
    assert run(m, increment(1), 2_001, CLIENT_A, 1, epoch=0).code is Code.DEDUP_EXPIRED
    assert _hits(m) == b"1"


def test_without_an_epoch_a_forgotten_retry_applies_twice_the_hazard_the_epoch_closes() -> None:
    # Canary: level-1 commands (no epoch) behave as the table did before, and double-apply.
    m = _machine_with_small_dedup()
    assert run(m, increment(1), 10, CLIENT_A, 1).ok
    for i in range(2):
        run(m, c.Barrier(), 11, b"other%d" % i, 1)
    assert run(m, increment(1), 12, CLIENT_A, 1).ok
    assert _hits(m) == b"2"


def test_a_client_id_born_after_the_last_forgotten_entry_is_new_and_applies() -> None:
    m = _machine_with_small_dedup()
    run(m, increment(1), 10, CLIENT_A, 1, epoch=0)
    for i in range(2):
        run(m, c.Barrier(), 11, b"other%d" % i, 1, epoch=0)
    refused = run(m, increment(1), 12, b"fresh", 1, epoch=0)
    assert refused.code is Code.DEDUP_EXPIRED
    assert run(m, increment(1), 13, b"fresh", 1, epoch=refused.count).ok
    assert _hits(m) == b"2"


def test_a_client_epoch_later_than_the_cluster_time_is_invalid() -> None:
    m = _machine_with_small_dedup()
    assert run(m, increment(1), 10, CLIENT_A, 1, epoch=11).code is Code.INVALID
    assert _hits(m) == b"0"


def test_forgotten_watermark_survives_a_snapshot() -> None:
    m = _machine_with_small_dedup()
    run(m, increment(1), 10, CLIENT_A, 1, epoch=0)
    for i in range(2):
        run(m, c.Barrier(), 11, b"other%d" % i, 1, epoch=0)
    restored = SessionMachine(Limits())
    restored.restore(m.snapshot())
    assert run(restored, increment(1), 12, CLIENT_A, 1, epoch=0).code is Code.DEDUP_EXPIRED


# ------------------------------------------------------------------ capture and prechecks
def test_capture_serializes_the_state_at_capture_time_whatever_apply_does_after() -> None:
    m = SessionMachine(Limits())
    run(m, create(1), 1)
    run(m, create(2), 1)
    expected = m.snapshot()
    capture = m.capture()
    run(m, update(1, set_=(("k", b"v"),)), 2)
    run(m, c.Rotate(token_hash(2), token_hash(9), "bob"), 3)
    run(m, create(3), 4)
    assert capture.serialize() == expected
    assert m.snapshot() != expected


def test_precheck_refuses_an_update_over_the_session_total_before_the_log() -> None:
    limits = Limits(max_session_bytes=100)
    m = SessionMachine(limits)
    run(m, create(1, attributes=(("a", b"x" * 60),)), 1)
    over = update(1, set_=(("b", b"y" * 60),))
    refusal = m.precheck(over)
    assert refusal is not None and refusal.code is Code.QUOTA
    assert m.precheck(update(1, set_=(("a", b"y" * 90),))) is None  # replaces, fits
    assert m.precheck(update(7, set_=(("b", b"y" * 60),))) is None  # apply answers NotFound


def test_precheck_refuses_a_create_over_the_session_total() -> None:
    m = SessionMachine(dataclasses.replace(Limits(), max_session_bytes=10))
    refusal = m.precheck(create(1, attributes=(("a", b"x" * 20),)))
    assert refusal is not None and refusal.code is Code.QUOTA


# ------------------------------------------------------------------ request ids bound to requests
def test_a_request_id_reused_for_a_different_request_is_refused_not_answered_with_the_first_reply() -> None:
    m = SessionMachine(Limits())
    assert run(m, create(1, principal="alice", attributes=(("secret", b"x"),)), 1, CLIENT_A, 1, epoch=0).ok
    logout = run(m, c.Delete(token_hash(1), None), 2, CLIENT_A, 1, epoch=0)
    assert logout.code is Code.INVALID and "different request" in logout.message
    assert token_hash(1) in m.sessions  # and nothing ran in its name
    leak = run(m, update(2), 3, CLIENT_A, 1, epoch=0)
    assert leak.code is Code.INVALID and leak.session is None


def test_a_true_retry_with_a_fresh_handle_is_still_answered_with_the_first_reply() -> None:
    m = SessionMachine(Limits())
    first = run(m, create(1, handle="h-first"), 1, CLIENT_A, 1, epoch=0)
    retry = run(m, create(1, handle="h-retry"), 2, CLIENT_A, 1, epoch=0)  # the proposer draws a new handle
    assert retry == first


def test_without_an_epoch_a_reused_request_id_gets_the_first_reply_the_hazard_the_binding_closes() -> None:
    m = SessionMachine(Limits())
    assert run(m, create(1), 1, CLIENT_A, 1).ok
    assert run(m, c.Delete(token_hash(1), None), 2, CLIENT_A, 1).ok  # "ok", yet nothing was deleted
    assert token_hash(1) in m.sessions


# ------------------------------------------------------------------ idle timeout changes (level 4)
def _idle(n: int, idle_ms: int) -> c.Update:
    return c.Update(token_hash(n), set=(), delete=(), expected_version=None, idle_timeout_ms=idle_ms)


def test_update_changes_the_idle_timeout_and_expiry_follows_it_absolute_deadline_stays() -> None:
    m = SessionMachine(Limits())
    assert run(m, create(1, idle_ms=5_000), 0).ok
    before = m.sessions[token_hash(1)]
    assert run(m, _idle(1, 1_000), 100).ok  # shorter: last access 100 + 1,000
    after = m.sessions[token_hash(1)]
    assert after.idle_timeout_ms == 1_000 and after.absolute_deadline_ms == before.absolute_deadline_ms
    run(m, c.Expire(limit=100), 1_099)
    assert token_hash(1) in m.sessions
    run(m, c.Expire(limit=100), 1_101)
    assert token_hash(1) not in m.sessions  # it expired by the new, shorter idle timeout


def test_an_idle_timeout_over_the_limit_or_not_positive_is_refused_and_changes_nothing() -> None:
    m = SessionMachine(Limits())
    run(m, create(1), 0)
    before = m.sessions[token_hash(1)]
    assert run(m, _idle(1, Limits().max_idle_timeout_ms + 1), 1).code is Code.QUOTA
    assert run(m, _idle(1, 0), 2).code is Code.INVALID
    assert m.sessions[token_hash(1)] == before


def test_an_update_without_an_idle_timeout_encodes_and_fingerprints_as_older_releases_did() -> None:
    # Left out while None: the same bytes (so the same fingerprint) as a level-3 release wrote.
    op = c.Update(token_hash(1), set=(("a", b"1"),), delete=(), expected_version=None)
    raw = c.encode(c.Command(op, now_ms=1))
    assert b"idle_timeout_ms" not in raw
    assert c.level_of(c.Command(op, now_ms=1)) == c.BASE_LEVEL
    with_idle = dataclasses.replace(op, idle_timeout_ms=2_000)
    assert c.fingerprint(with_idle) != c.fingerprint(op)
    assert c.decode(c.encode(c.Command(with_idle, now_ms=1))).op == with_idle


def test_a_node_at_level_3_refuses_to_apply_an_idle_timeout_change() -> None:
    old = SessionMachine(Limits(), supported_level=3)
    with pytest.raises(c.UndecodableEntry, match="needs command level 4"):
        old.apply(c.encode(c.Command(_idle(1, 2_000), now_ms=1)))

"""The lifecycle event ring (store/events.py) and what apply puts in it (store/state.py)."""

from __future__ import annotations

import hashlib

import msgpack
import pytest

from sessionquorum.store import commands as c
from sessionquorum.store import events as ev
from sessionquorum.store.config import Limits
from sessionquorum.store.replies import Code
from sessionquorum.store.state import SessionMachine


def _h(i: int) -> bytes:
    return hashlib.sha256(b"token %d" % i).digest()


def _apply(m: SessionMachine, op: c.Op, now_ms: int) -> None:
    reply = m.apply(c.encode(c.Command(op, now_ms=now_ms)))
    assert reply.code is Code.OK, reply


def _machine(max_count: int = 1000, max_bytes: int = 1 << 20, **limits: int | str) -> SessionMachine:
    m = SessionMachine(Limits(**limits))  # type: ignore[arg-type]
    _apply(m, c.EnableEvents(max_count, max_bytes), 1)
    return m


def _create(
    m: SessionMachine, i: int, now_ms: int, principal: str | None = "alice", idle_ms: int = 60_000
) -> None:
    op = c.Create(_h(i), f"h{i:03d}", principal, (("secret", b"value %d" % i),), idle_ms, 3_600_000)
    _apply(m, op, now_ms)


def _ring(m: SessionMachine) -> ev.EventRing:
    assert m.lifecycle is not None
    return m.lifecycle


def _kinds(m: SessionMachine) -> list[tuple[str, str, str]]:
    assert m.lifecycle is not None
    return [(kind, handle, reason) for _, _, kind, handle, _, reason in m.lifecycle.events()]


# ----------------------------------------------------------------------- the ring alone
def test_ring_keeps_the_newest_max_count_events_and_answers_compacted_below() -> None:
    ring = ev.EventRing(16, 1 << 20)
    for i in range(40):
        ring.append(i, ev.Kind.CREATED, f"h{i}", None)
    assert len(ring) == 16 and ring.oldest == 25 and ring.last_cursor == 40
    assert ring.after(0, 100) == ev.Compacted(cursor=0, oldest=24)
    assert ring.after(23, 100) == ev.Compacted(cursor=23, oldest=24)
    page = ring.after(24, 5)
    assert isinstance(page, list) and [e[0] for e in page] == [25, 26, 27, 28, 29]
    assert ring.after(40, 5) == []  # caught up: nothing yet, not compacted


def test_ring_keeps_within_its_byte_bound_and_always_the_newest_event() -> None:
    ring = ev.EventRing(1000, 4096)
    for i in range(200):
        ring.append(i, ev.Kind.REVOKED, "h" * 60, "p" * 200, "principal")
        assert ring.bytes <= 4096
    assert len(ring) == 4096 // ev.event_bytes((0, 0, ev.Kind.REVOKED, "h" * 60, "p" * 200, "principal"))
    assert ring.bytes == sum(ev.event_bytes(e) for e in ring.events())
    assert isinstance(ring.after(0, 1), ev.Compacted)


def test_ring_resize_keeps_cursors_and_the_newest_events() -> None:
    ring = ev.EventRing(100, 1 << 20)
    for i in range(50):
        ring.append(i, ev.Kind.UPDATED, f"h{i}", None)
    smaller = ring.resized(20, 1 << 20)
    assert smaller.next_cursor == 51 and smaller.oldest == 31
    assert list(smaller.events()) == list(ring.events())[-20:]


def test_ring_snapshot_round_trip_is_exact() -> None:
    ring = ev.EventRing(16, 1 << 20)
    for i in range(30):
        ring.append(i, ev.Kind.EXPIRED, f"h{i}", "bob" if i % 2 else None, "idle")
    wire = msgpack.unpackb(msgpack.packb(ring.capture()), use_list=True)
    back = ev.EventRing.from_wire(wire)
    assert back.capture() == [list(x) if isinstance(x, tuple) else x for x in ring.capture()]
    assert list(back.events()) == list(ring.events()) and back.bytes == ring.bytes


def test_bounds_outside_the_allowed_range_are_refused_by_apply() -> None:
    m = SessionMachine(Limits())
    reply = m.apply(c.encode(c.Command(c.EnableEvents(1, 1 << 20), now_ms=1)))
    assert reply.code is Code.INVALID and m.lifecycle is None


# ------------------------------------------------------------------ what apply emits
def test_each_operation_emits_its_event_in_commit_order_without_token_hashes_or_values() -> None:
    m = _machine()
    _create(m, 1, 1_000)
    _apply(m, c.Update(_h(1), (("secret", b"changed"),), (), None), 2_000)
    _apply(m, c.Rotate(_h(1), _h(2), None), 3_000)
    _apply(m, c.Delete(_h(2), None), 4_000)
    _create(m, 3, 5_000)
    _create(m, 4, 5_001)
    _apply(m, c.RevokePrincipal("alice", "h004"), 6_000)
    _create(m, 5, 7_000, idle_ms=1_000)  # ends idle at 8_000
    _apply(m, c.Expire(100), 9_000)
    assert _kinds(m) == [
        ("created", "h001", ""),
        ("updated", "h001", ""),
        ("rotated", "h001", ""),
        ("deleted", "h001", ""),
        ("created", "h003", ""),
        ("created", "h004", ""),
        ("revoked", "h003", "principal"),
        ("created", "h005", ""),
        ("expired", "h005", "idle"),
    ]
    assert m.lifecycle is not None
    events = list(m.lifecycle.events())
    assert [e[0] for e in events] == list(range(1, 10))  # one cursor sequence, no gap
    # The registry names every kind emitted (reuse_detected: the test below).
    assert {e[2] for e in events} == set(ev.KINDS) - {ev.Kind.REUSE_DETECTED}
    assert [e[1] for e in events][:4] == [1_000, 2_000, 3_000, 4_000]  # replicated time
    flat = msgpack.packb(m.lifecycle.capture())
    for i in range(1, 6):
        assert _h(i) not in flat and b"value %d" % i not in flat
    assert b"changed" not in flat


def test_expiry_found_by_any_command_is_an_event_with_its_reason() -> None:
    m = _machine()
    op = c.Create(_h(1), "h001", None, (), 1_000, 1_000)  # absolute lifetime 1 s
    _apply(m, op, 1_000)
    reply = m.apply(c.encode(c.Command(c.Touch(_h(1)), now_ms=5_000)))  # finds it expired
    assert reply.code is Code.NOT_FOUND
    assert _kinds(m)[-1] == ("expired", "h001", "absolute")


def test_evicting_a_principals_oldest_session_is_a_revoked_event() -> None:
    m = _machine(max_sessions_per_principal=1)
    _create(m, 1, 1_000)
    _create(m, 2, 2_000)
    assert _kinds(m) == [
        ("created", "h001", ""),
        ("revoked", "h001", "principal_cap"),
        ("created", "h002", ""),
    ]


def test_a_disabled_ring_emits_nothing_and_keeps_the_old_snapshot_format() -> None:
    m = SessionMachine(Limits())
    _create(m, 1, 1_000)
    assert m.lifecycle is None
    assert msgpack.unpackb(m.snapshot())["format"] == 2  # byte-identical to the release before


def test_a_format_2_snapshot_loads_and_enabling_later_starts_at_cursor_1() -> None:
    old = SessionMachine(Limits())
    _create(old, 1, 1_000)
    m = SessionMachine(Limits())
    m.restore(old.snapshot())
    assert m.lifecycle is None and len(m.sessions) == 1
    _apply(m, c.EnableEvents(100, 1 << 20), 2_000)
    _apply(m, c.Delete(_h(1), None), 3_000)
    assert [e[0] for e in _ring(m).events()] == [1]


def test_a_replica_restored_from_a_snapshot_emits_the_same_events_as_one_that_replayed() -> None:
    """A principal's index is in insertion order when replayed and in token-hash order when
    restored: events of one command must not follow either."""
    log: list[bytes] = [c.encode(c.Command(c.EnableEvents(64, 1 << 20), now_ms=1))]
    # Token hashes in descending order of creation, so the two index orders differ.
    for n, i in enumerate(sorted(range(8), key=lambda i: _h(i), reverse=True)):
        op = c.Create(_h(i), f"h{n:03d}", "alice", (), 60_000, 3_600_000)
        log.append(c.encode(c.Command(op, now_ms=1_000 + n)))
    tail = [
        c.encode(c.Command(c.RevokePrincipal("alice", None), now_ms=5_000)),
        c.encode(c.Command(c.Create(_h(99), "h099", "bob", (), 60_000, 3_600_000), now_ms=6_000)),
    ]
    replayed, restored = SessionMachine(Limits()), SessionMachine(Limits())
    for entry in log:
        replayed.apply(entry)
    restored.restore(replayed.snapshot())
    assert list(restored.by_principal["alice"]) != list(replayed.by_principal["alice"])
    for entry in tail:
        replayed.apply(entry)
        restored.apply(entry)
    assert replayed.digest() == restored.digest()
    assert _kinds(replayed) == _kinds(restored)
    assert [k for k in _kinds(replayed) if k[0] == "revoked"] == [
        ("revoked", f"h{n:03d}", "principal") for n in range(8)
    ]


@pytest.mark.parametrize("max_count", [16, 1000])
def test_the_ring_survives_a_snapshot_round_trip_in_the_state_machine(max_count: int) -> None:
    m = _machine(max_count=max_count)
    for i in range(40):
        _create(m, i, 1_000 + i, principal=None)
    back = SessionMachine(Limits())
    back.restore(m.snapshot())
    assert back.digest() == m.digest()
    assert back.lifecycle is not None and m.lifecycle is not None
    assert list(back.lifecycle.events()) == list(m.lifecycle.events())
    assert back.lifecycle.oldest == m.lifecycle.oldest


def test_a_rotated_away_token_used_after_its_grace_emits_reuse_detected_then_the_revocation() -> None:
    m = _machine(revoke_on_reuse="on")
    _create(m, 1, 1_000)
    _apply(m, c.Rotate(_h(1), _h(2), None, grace=True), 2_000)
    grace = Limits().rotation_grace_ms
    # Past the grace the old token is a reuse: the theft signal, then (revoke_on_reuse) its
    # successor's end; under the one handle the session kept through the rotation.
    m.apply(c.encode(c.Command(c.ReuseDetected(_h(1)), now_ms=2_000 + grace + 1)))
    assert _kinds(m)[-2:] == [("reuse_detected", "h001", ""), ("revoked", "h001", "reuse")]
    assert all(principal == "alice" for *_, principal, _ in list(_ring(m).events())[-2:])

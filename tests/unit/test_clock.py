"""The proposer's clock: a wall clock ahead of the cluster's time line is bounded and reported."""

from __future__ import annotations

import pytest

from sessionquorum.store import clock as clock_mod
from sessionquorum.store.clock import ProposerClock

HOUR_MS = 3_600_000


class FakeTime:
    def __init__(self) -> None:
        self.wall = 1_000_000
        self.mono = 5_000

    def advance(self, ms: int) -> None:
        self.wall += ms
        self.mono += ms


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    t = FakeTime()
    monkeypatch.setattr(clock_mod, "wall_ms", lambda: t.wall)
    monkeypatch.setattr(clock_mod, "monotonic_ms", lambda: t.mono)
    return t


def test_before_any_entry_is_observed_the_wall_clock_stands(fake: FakeTime) -> None:
    assert ProposerClock(500).stamp(term=1) == fake.wall


def test_a_correct_wall_clock_is_stamped_as_it_is(fake: FakeTime) -> None:
    clock = ProposerClock(500)
    clock.observe(fake.wall - 20)  # an entry the previous leader stamped 20 ms ago
    fake.advance(10_000)
    assert clock.stamp(term=2) == fake.wall
    assert clock.ahead_ms == 0


def test_a_wall_clock_an_hour_ahead_is_bounded_by_elapsed_time_plus_drift(fake: FakeTime) -> None:
    clock = ProposerClock(500)
    clock.observe(fake.wall)
    fake.advance(2_000)
    true_now = fake.wall
    fake.wall += HOUR_MS
    assert clock.stamp(term=2) == true_now + 500
    assert clock.ahead_ms == HOUR_MS - 500


def test_own_stamps_cannot_ratchet_the_bound_within_a_term(fake: FakeTime) -> None:
    clock = ProposerClock(500)
    clock.observe(fake.wall)
    fake.wall += HOUR_MS
    for _ in range(100):
        stamped = clock.stamp(term=3)
        clock.observe(stamped)  # this leader's own entry, applied here
        fake.advance(10)
    # 100 entries later the stamp still runs at real speed (+ one drift), not 100 drifts ahead.
    assert clock.stamp(term=3) == fake.wall - HOUR_MS + 500


def test_a_wall_clock_behind_is_stamped_and_left_to_apply_to_clamp(fake: FakeTime) -> None:
    clock = ProposerClock(500)
    clock.observe(fake.wall)
    fake.wall -= 60_000
    assert clock.stamp(term=1) == fake.wall
    assert clock.ahead_ms == 0

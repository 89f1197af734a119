"""The soak's plan: thresholds this build accepts, and windows that scale with the run."""

from __future__ import annotations

import pytest

from sessionquorum.store.config import RaftSettings

from .plan import SoakPlan


@pytest.mark.parametrize(
    "plan", [SoakPlan.short(), SoakPlan.full(3.0), SoakPlan.full()], ids=["short", "3min", "30min"]
)
def test_the_plan_lowers_a_compaction_threshold_this_build_accepts(plan: SoakPlan) -> None:
    raft = plan.overrides()["raft"]
    assert raft, "no compaction threshold of this RaftSettings was recognised"
    RaftSettings(**raft).validate()  # an unknown key or a refused value raises


def test_compaction_off_passes_no_override() -> None:
    assert SoakPlan.full(3.0, compaction=False).overrides() == {}


def test_the_verdict_windows_scale_with_the_run() -> None:
    assert SoakPlan.full().windows() == ((300.0, 900.0), (1200.0, 1800.0))
    assert SoakPlan.full(3.0).windows() == ((30.0, 90.0), (120.0, 180.0))

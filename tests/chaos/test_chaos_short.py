"""The short chaos matrix, on every CI run: real nodes, real faults, every check.

`make chaos` runs the full matrix; this keeps the suite and the store honest in minutes.
A seed from SQ_CHAOS_SEED replays a run (it is printed, and written into each report).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.chaos.framework._chaos import Scenario, run_scenario, unavailable_reason
from tests.chaos.framework._matrix import SHORT, summary_row

pytestmark = pytest.mark.cluster

SEED = int(os.environ.get("SQ_CHAOS_SEED") or random.SystemRandom().randrange(2**31))


# `make test` runs kill-leader (the commonest fault); the others are slow here and run in
# `make test-slow` and in `make chaos`'s full matrix (make test has a 10-minute budget).
IN_MAKE_TEST = {"kill-leader"}


@pytest.mark.parametrize(
    "scenario",
    [s if s.name in IN_MAKE_TEST else pytest.param(s, marks=pytest.mark.slow) for s in SHORT],
    ids=[s.name for s in SHORT],
)
def test_short_chaos_scenario_finds_no_anomaly(scenario: Scenario, tmp_path: Path) -> None:
    reason = unavailable_reason(scenario)
    if reason:
        pytest.skip(reason)
    print(f"chaos seed {SEED} (replay: SQ_CHAOS_SEED={SEED})")
    report = run_scenario(scenario, SEED, tmp_path)
    print(summary_row(report))
    anomalies = report["extra"]["anomalies"]
    assert not anomalies, "\n".join([f"seed {SEED}", *anomalies[:20]])
    assert report["faults"], "the nemesis never injected a fault"
    assert report["recovery"]["summary"]["unrecovered"] == 0, report["recovery"]
    assert report["counts"]["by_outcome"]["ok"] > 0

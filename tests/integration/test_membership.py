"""Live membership on real nodes under client load, every history checked.

The chaos framework's run (tests/chaos/framework) with the `membership` nemesis: each
injection is one complete MemberAdd (a new node, started, added) or MemberRemove (any
member, every other time the leader itself, which hands over first), so the cluster goes
3 -> 4 -> 5 -> 4 -> 3. The workers' register, counter and lifecycle histories are checked
for linearizability and lost writes, every node must converge, and the report carries the
longest write gap.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.framework._chaos import Scenario, run_scenario

pytestmark = pytest.mark.cluster


def _check(report: dict[str, Any], changes_at_least: int) -> list[str]:
    anomalies = report["extra"]["anomalies"]
    assert not anomalies, "\n".join(anomalies[:20])
    details = [f["detail"] for f in report["faults"]]
    done = [d for d in details if "refused" not in d]
    assert len(done) >= changes_at_least, details
    assert report["counts"]["by_outcome"]["ok"] > 0
    print("membership changes:", details)
    print("longest write gap:", report["write_gap"])
    print("operations by outcome:", report["counts"]["by_outcome"])
    return done


def test_three_to_four_and_back_under_load_loses_nothing_and_stays_linearizable(tmp_path: Path) -> None:
    scenario = Scenario("membership", "membership", duration_s=9.0, quiet_s=0.5, fault_s=0.5)
    done = _check(
        run_scenario(scenario, random.SystemRandom().randrange(2**31), tmp_path), changes_at_least=2
    )
    assert done[0].startswith("added n4"), done
    assert any(d.startswith("removed") for d in done) or len(done) < 3, done

"""The short soak, on every `make test`: about 90 s of real nodes, real faults, every check.

It asserts what a short run can show reliably: no anomaly in the checked history, and that
the run did what it claims (compactions happened on every node, a follower was killed and
restarted, a node was down until it needed a snapshot and then caught up, the leader's
clock was pushed an hour ahead). Flatness, terms and p99 need the long run (`make soak`);
they are computed here too and printed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.framework._nemesis import LIBFAKETIME

from .plan import SoakPlan
from .report import summary
from .runner import run_soak

pytestmark = pytest.mark.cluster


# Slow: a minute of its own, over make test's 10-minute budget; `make soak` runs the real one.
@pytest.mark.slow
@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="the clock fault needs libfaketime (package faketime)")
def test_short_soak_finds_no_anomaly_and_injects_every_fault_it_claims(tmp_path: Path) -> None:
    plan = SoakPlan.short()
    report = run_soak(plan, tmp_path)
    print(summary(report))
    verdicts = report["verdicts"]
    claims = verdicts["did_what_it_claims"]

    assert verdicts["anomalies"]["count"] == 0, "\n".join(report["anomalies"][:20])
    assert not verdicts["history_checked"]["undecided_keys"]
    assert report["checks"]["checked_ops"] > 0 and claims["history_ops_ok"] > 0
    assert not claims["fault_errors"], claims["fault_errors"]
    assert claims["follower_killed"]
    assert claims["clock_pushed_ahead"]
    if plan.overrides().get("raft"):  # this build has compaction settings to lower
        assert min(claims["compactions_per_node"].values()) > 0, claims["compactions_per_node"]
        assert claims["long_down_needed_snapshot"], report["facts"]["long_down"]
    assert claims["long_down_caught_up"], report["facts"]["long_down"]
    assert (tmp_path / "soak.json").stat().st_size > 0
    assert (tmp_path / "soak.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="the clock fault needs libfaketime (package faketime)")
def test_short_soak_reports_anomalies_when_a_clock_an_hour_ahead_is_trusted(tmp_path: Path) -> None:
    """The canary: with the drift bound lifted to 10 h, the skewed leader moves the cluster's
    time an hour ahead and every lifecycle session (idle timeout 50 min) expires early."""
    report = run_soak(SoakPlan.short(), tmp_path, extra_overrides={"server": {"clock_drift_ms": 36_000_000}})
    print(summary(report))
    assert report["facts"]["clock_ahead"]["became_leader_again"], "the skewed node never led: no hazard"
    assert any("answered not found" in a or "is missing" in a for a in report["anomalies"]), report[
        "anomalies"
    ]
    assert not report["ok"]

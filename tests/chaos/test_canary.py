"""The suite must be able to fail: with reads served stale, the checker must say so.

Every validate is turned into a STALE read from a random node (what a store without the
ReadIndex confirmation would serve). Followers apply a commit a round trip after the leader
answers, so some reads miss an acknowledged write, and the linearizability checker must
flag them.
A suite that found nothing here would prove nothing elsewhere.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from sessionquorum.client import Session, SessionClient
from tests.chaos.framework import Scenario, run_scenario

pytestmark = pytest.mark.cluster


def test_checker_flags_stale_reads_when_reads_skip_the_barrier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_validate = SessionClient.validate

    def stale_validate(self: SessionClient, token: str, **kwargs: Any) -> Session:
        # Send it to any node, as a stale read may be served by any node.
        self._router._leader = random.choice(self._router.endpoints)
        return real_validate(self, token, stale=True)

    monkeypatch.setattr(SessionClient, "validate", stale_validate)
    scenario = Scenario(
        "canary-stale-reads", "kill-follower", workloads=("register",), workers=8, duration_s=12.0
    )
    report = run_scenario(scenario, 3, tmp_path)

    anomalies = report["extra"]["anomalies"]
    assert any("not linearizable" in a for a in anomalies), anomalies

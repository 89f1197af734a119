"""What a soak run does and when: one frozen plan, derived from its length.

Every instant is a fraction of the run, so a 3-minute run has the same shape as the
30-minute one (the windows of the "flat after warm-up" verdict scale with it too). The
compaction thresholds are passed only under the names the installed `RaftSettings` knows,
so the soak runs before and after the store's own compaction settings land.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from sessionquorum.store.config import RaftSettings

DEFAULT_MINUTES = 30.0
SHORT_S = 60.0
# The names a compaction threshold has had in RaftSettings: pysyncobj's (today) and those of
# the store's own snapshots (issue 6). Whichever this build knows is set.
ENTRY_THRESHOLDS = ("compaction_min_entries", "compaction_entries")
BYTE_THRESHOLDS = ("compaction_min_bytes", "journal_max_bytes")
# Verdict windows, as fractions of the run: a 30-minute run warms up for 5 minutes and
# compares minutes 5-15 with minutes 20-30 (issue 6, "Done when").
WARM_UP_FRACTION = 1 / 6
WINDOW_FRACTION = 1 / 3


@dataclass(frozen=True, slots=True)
class SoakPlan:
    duration_s: float
    # Compaction thresholds (raft.*): low enough that every node compacts often.
    compaction_min_entries: int
    compaction_min_bytes: int
    # False leaves the thresholds at the cluster's defaults (SOAK_COMPACTION=off): a run
    # that shows what the verdicts say of a store whose journal is never compacted.
    compaction: bool = True
    # Load: workers per kind, each paced to at most `ops_per_worker_s` calls a second.
    lifecycle_workers: int = 3
    register_workers: int = 3
    counter_workers: int = 2
    ops_per_worker_s: float = 25.0
    live_per_worker: int = 16  # a lifecycle worker's live sessions: the state stays bounded
    generation_s: float = 120.0  # register/counter keys are replaced this often (checker cost)
    sample_period_s: float = 1.0
    # Faults, as fractions of the run.
    kill_follower_at: float = 0.25
    kill_follower_down_s: float = 5.0
    long_down_at: float = 0.42
    long_down_min_s: float = 60.0
    long_down_max_s: float = 240.0
    long_down_compactions: int = 3  # every running node compacts this often while it is down
    clock_at: float = 0.62
    clock_hold_s: float = 90.0
    clock_offset: str = "+3600s"
    leader_handover_attempts: int = 5
    # A term change this long after a fault's end is still blamed on the fault.
    fault_grace_s: float = 15.0
    # The run must show it did what it claims: this many compactions on every node.
    min_compactions_per_node: int = 20

    @staticmethod
    def full(minutes: float = DEFAULT_MINUTES, compaction: bool = True) -> SoakPlan:
        duration = minutes * 60.0
        scale = duration / (DEFAULT_MINUTES * 60.0)
        return SoakPlan(
            duration_s=duration,
            compaction_min_entries=2_000,
            compaction_min_bytes=512 * 1024,
            compaction=compaction,
            long_down_min_s=max(10.0, 60.0 * scale),
            long_down_max_s=max(30.0, 240.0 * scale),
            clock_hold_s=max(10.0, 90.0 * scale),
            generation_s=min(120.0, max(20.0, duration / 6)),
            sample_period_s=1.0 if duration >= 600 else 0.5,
            min_compactions_per_node=max(1, round(20 * min(1.0, scale))),
        )

    @staticmethod
    def short() -> SoakPlan:
        """About 90 s in all: small thresholds, every fault once, brief holds."""
        return SoakPlan(
            duration_s=SHORT_S,
            compaction_min_entries=200,
            compaction_min_bytes=64 * 1024,
            lifecycle_workers=2,
            register_workers=2,
            counter_workers=2,
            ops_per_worker_s=20.0,
            live_per_worker=8,
            generation_s=20.0,
            sample_period_s=0.5,
            kill_follower_down_s=3.0,
            long_down_min_s=6.0,
            long_down_max_s=15.0,
            long_down_compactions=2,
            clock_hold_s=6.0,
            leader_handover_attempts=3,
            fault_grace_s=10.0,
            min_compactions_per_node=1,
        )

    @staticmethod
    def from_env() -> SoakPlan:
        raw = os.environ.get("SOAK_MINUTES", "").strip()
        minutes = float(raw) if raw else DEFAULT_MINUTES
        if not minutes > 0:
            raise ValueError(f"SOAK_MINUTES must be > 0, got {raw!r}")
        compaction = os.environ.get("SOAK_COMPACTION", "on").strip().lower()
        if compaction not in ("on", "off"):
            raise ValueError(f"SOAK_COMPACTION must be on or off, got {compaction!r}")
        return SoakPlan.full(minutes, compaction=compaction == "on")

    @property
    def workers(self) -> int:
        return self.lifecycle_workers + self.register_workers + self.counter_workers

    @property
    def warm_up_s(self) -> float:
        return self.duration_s * WARM_UP_FRACTION

    def windows(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(first, last): the first window after warm-up, and the run's last window."""
        span = self.duration_s * WINDOW_FRACTION
        return (self.warm_up_s, self.warm_up_s + span), (self.duration_s - span, self.duration_s)

    @property
    def idle_timeout_s(self) -> float:
        """Long enough that no session idles out during the run, short enough that a clock an
        hour ahead (if replicated time followed it) would expire every one of them."""
        return max(50 * 60.0, self.duration_s + 15 * 60.0)

    def overrides(self) -> dict[str, dict[str, Any]]:
        """Cluster overrides: the compaction keys this RaftSettings has, and nothing else."""
        if not self.compaction:
            return {}
        known = {f.name for f in dataclasses.fields(RaftSettings)}
        raft = {
            name: value
            for names, value in (
                (ENTRY_THRESHOLDS, self.compaction_min_entries),
                (BYTE_THRESHOLDS, self.compaction_min_bytes),
            )
            for name in names
            if name in known
        }
        return {"raft": raft} if raft else {}

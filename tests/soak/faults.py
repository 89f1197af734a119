"""The soak's faults, each once, at planned instants: what they did goes into `facts`.

1. kill -9 of a follower, restarted after a few seconds;
2. kill -9 of a follower kept down until every running node has compacted several times
   (so its log end is behind every log start: it can only catch up from a snapshot),
   then restarted; the time until it has applied what was committed at its restart;
3. the leader restarted with its clock an hour ahead (libfaketime through ClockWrapper, the
   node's own pid), then the other nodes' leaders restarted until the skewed node leads
   again (bounded; pysyncobj has no leadership transfer, so it may not), held there under
   load, then restarted with a true clock.

Every action becomes a FaultWindow on the History's clock; the verdicts excuse term changes
within a grace period after each, and nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sessionquorum.cluster import LocalCluster
from tests.chaos.framework import FaultWindow
from tests.chaos.framework._nemesis import LIBFAKETIME, ClockWrapper

from .observe import Sampler
from .plan import SoakPlan
from .verdicts import compaction_counts

log = logging.getLogger(__name__)

LEADER_TIMEOUT_S = 30.0
CATCH_UP_TIMEOUT_S = 120.0
POLL_S = 0.2


class Faults:
    def __init__(
        self,
        plan: SoakPlan,
        cluster: LocalCluster,
        wrapper: ClockWrapper,
        sampler: Sampler,
        now: Callable[[], float],
        stop: threading.Event,
    ) -> None:
        self._plan = plan
        self._cluster = cluster
        self._wrapper = wrapper
        self._sampler = sampler
        self._now = now
        self._stop = stop
        self.windows: list[FaultWindow] = []
        self.facts: dict[str, Any] = {}

    def run(self) -> None:
        """Each fault at its planned instant; a fault that cannot be injected is recorded."""
        p = self._plan
        for name, at, action in (
            ("kill-follower", p.kill_follower_at, self._kill_follower),
            ("long-down", p.long_down_at, self._long_down),
            ("clock-ahead", p.clock_at, self._clock_ahead),
        ):
            if self._stop.wait(max(0.0, at * p.duration_s - self._now())):
                return
            try:
                action()
            except Exception as exc:  # reported as a failed verdict, never swallowed
                log.exception("fault %s failed", name)
                self.facts.setdefault("errors", []).append(f"{name}: {type(exc).__name__}: {exc}")

    def _follower(self, avoid: str | None = None) -> str:
        leader = self._cluster.wait_for_leader(LEADER_TIMEOUT_S)
        followers = [n for n in self._cluster.node_ids if n != leader]
        return next((n for n in followers if n != avoid), followers[0])

    def _window(self, name: str, start: float, detail: str) -> None:
        self.windows.append(FaultWindow(name, start, self._now(), detail))

    def _kill_follower(self) -> None:
        victim = self._follower()
        start = self._now()
        self._cluster.kill(victim)
        self._stop.wait(self._plan.kill_follower_down_s)
        self._cluster.start_node(victim)
        self._window("kill-follower", start, f"kill -9 {victim}, restarted")
        self.facts["kill_follower"] = {"node": victim, "down_s": round(self._now() - start, 3)}

    def _long_down(self) -> None:
        p = self._plan
        first = self.facts.get("kill_follower", {}).get("node")
        victim = self._follower(avoid=first)
        others = [n for n in self._cluster.node_ids if n != victim]
        before = self._cluster.status(victim)
        start = self._now()
        self._cluster.kill(victim)

        def compacted() -> dict[str, int]:
            since = [s for s in self._sampler.samples() if s.t >= start]
            return compaction_counts(since, others)

        while not self._stop.is_set() and self._now() - start < p.long_down_max_s:
            if (
                self._now() - start >= p.long_down_min_s
                and min(compacted().values()) >= p.long_down_compactions
            ):
                break
            self._stop.wait(POLL_S)
        counts = compacted()
        leader = self._cluster.status(self._cluster.wait_for_leader(LEADER_TIMEOUT_S))
        self._cluster.start_node(victim)
        restarted = self._now()
        self._window("long-down", start, f"kill -9 {victim}, down until the others compacted")
        self.facts["long_down"] = {
            "node": victim,
            "down_s": round(restarted - start, 3),
            "compactions_while_down": counts,
            # Every other node compacted after it went down (their logs start past its end,
            # unless a build keeps a tail of entries before its snapshot: then see the indexes).
            "needed_snapshot": min(counts.values()) >= 1,
            "applied_at_kill": before.last_applied if before is not None else None,
            "leader_snapshot_index_at_restart": getattr(leader, "snapshot_index", None) or None,
            "catch_up_s": self._catch_up(victim, restarted),
        }

    def _catch_up(self, victim: str, restarted: float) -> float | None:
        """Seconds from restart until the victim applied what the leader had committed then."""
        leader = self._cluster.wait_for_leader(LEADER_TIMEOUT_S)
        status = self._cluster.status(leader)
        target = status.commit_index if status is not None else 0
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        while time.monotonic() < deadline and not self._stop.is_set():
            mine = self._cluster.status(victim)
            if mine is not None and mine.last_applied >= target:
                return round(self._now() - restarted, 3)
            self._stop.wait(POLL_S)
        return None

    def _clock_ahead(self) -> None:
        p = self._plan
        if not LIBFAKETIME.exists():  # LD_PRELOAD of a missing library would run on a true clock
            raise RuntimeError(f"the clock fault needs libfaketime ({LIBFAKETIME}; Debian package faketime)")
        skewed = self._cluster.wait_for_leader(LEADER_TIMEOUT_S)
        start = self._now()
        self._wrapper.skews[skewed] = p.clock_offset
        self._cluster.restart(skewed)
        leader = self._cluster.wait_for_leader(LEADER_TIMEOUT_S)
        self._window("clock-ahead-restart", start, f"{skewed} restarted at {p.clock_offset}")
        attempts = 0
        while leader != skewed and attempts < p.leader_handover_attempts and not self._stop.is_set():
            # No leadership transfer in pysyncobj: restart whoever leads until the skewed node wins.
            attempts += 1
            handover, old = self._now(), leader
            self._cluster.restart(old)
            self._cluster.wait_for_new_leader(old, LEADER_TIMEOUT_S)
            leader = self._cluster.wait_for_leader(LEADER_TIMEOUT_S)
            self._window("handover-restart", handover, f"restart {old} so that {skewed} may lead")
        led = leader == skewed
        held = self._now()
        ahead: list[int] = []
        while self._now() - held < p.clock_hold_s and not self._stop.is_set():
            status = self._cluster.status(skewed)
            if status is not None and getattr(status, "clock_ahead_ms", None) is not None:
                ahead.append(int(status.clock_ahead_ms))
            self._stop.wait(1.0)
        still_led = self._cluster.leader_id() == skewed
        heal = self._now()
        self._wrapper.skews.pop(skewed, None)
        self._cluster.restart(skewed)
        self._cluster.wait_for_leader(LEADER_TIMEOUT_S)
        self._window("clock-true-restart", heal, f"{skewed} restarted on a true clock")
        self.facts["clock_ahead"] = {
            "node": skewed,
            "offset": p.clock_offset,
            "skewed_from_s": round(start, 3),
            "skewed_until_s": round(heal, 3),
            "became_leader_again": led,
            "still_leader_at_heal": still_led,
            "handover_restarts": attempts,
            "led_skewed_s": round(heal - held, 3) if led else 0.0,
            "max_clock_ahead_ms_reported": max(ahead) if ahead else None,
        }

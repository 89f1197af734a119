"""The chaos matrix, and `python -m tests.chaos` (`make chaos`) that runs it.

    python -m tests.chaos [--matrix full|short] [--only NAME ...] [--seed N] [--out DIR] [--duration S]

The seed is printed first and written into every report, so `--seed N` replays a run's
choices (which node, which split, which skew; workers' operations). The exit status is 1 if
any scenario found an anomaly, so `make chaos` fails loudly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from . import _chaos
from ._chaos import Scenario, run_scenario, unavailable_reason

FULL: tuple[Scenario, ...] = (
    Scenario("kill-leader", "kill-leader"),
    Scenario("kill-follower", "kill-follower"),
    Scenario("kill-minority-5", "kill-minority", nodes=5),
    Scenario("kill-all", "kill-all", fault_s=2.0),
    Scenario("pause-leader", "pause-leader"),
    Scenario("pause-follower", "pause-follower"),
    Scenario("partition-isolate-leader", "partition-isolate-leader"),
    Scenario("partition-split", "partition-split"),
    Scenario("partition-bridge-5", "partition-bridge", nodes=5),
    Scenario("partition-ring-5", "partition-ring", nodes=5),
    Scenario("partition-flapping", "partition-split", quiet_s=0.5, fault_s=0.8),
    Scenario("clock-skew", "clock-skew", fault_s=5.0),
    Scenario("leader-transfer", "leader-transfer", quiet_s=1.0, fault_s=1.0),
    Scenario("leader-transfer-5", "leader-transfer", nodes=5, quiet_s=1.0, fault_s=1.0),
    Scenario("membership", "membership", duration_s=30.0, quiet_s=1.5, fault_s=1.0),
    Scenario("membership-kill-leader", "membership-kill-leader", duration_s=40.0, quiet_s=2.5, fault_s=1.5),
    # A follower down while the others take sustained writes on 100,000 sessions, then
    # restarted: where pysyncobj's compaction was measured to cause election storms.
    Scenario(
        "follower-catchup-100k", "kill-follower", preload=100_000, duration_s=45.0, quiet_s=5.0, fault_s=20.0
    ),
)
# What `make test` runs on every CI: a few minutes, one scenario per kind of fault.
SHORT: tuple[Scenario, ...] = (
    Scenario("kill-leader", "kill-leader", duration_s=12.0),
    Scenario("pause-leader", "pause-leader", duration_s=12.0),
    Scenario("partition-isolate-leader", "partition-isolate-leader", duration_s=12.0),
)
MATRICES = {"full": FULL, "short": SHORT}


def summary_row(report: dict[str, Any]) -> dict[str, Any]:
    """One table row: what the closing note of a chaos run reports per scenario."""
    recovery = report["recovery"]["summary"]
    return {
        "scenario": report["scenario"],
        "faults": len(report["faults"]),
        "ops": report["counts"]["total"],
        "unknown": report["unknown"],
        "anomalies": len(report["extra"]["anomalies"]),
        "recovery_p50_s": recovery.get("p50"),
        "recovery_max_s": recovery.get("max"),
        # Wherever it falls, heals included: the figure the partition targets apply to.
        "write_gap_max_s": (report.get("write_gap") or {}).get("length_s"),
    }


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    header = [
        "scenario",
        "faults",
        "ops",
        "unknown",
        "anomalies",
        "recovery_p50_s",
        "recovery_max_s",
        "write_gap_max_s",
    ]
    widths = [max(len(h), *(len(_fmt(r[h])) for r in rows)) for h in header]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(_fmt(row[h]).ljust(w) for h, w in zip(header, widths, strict=True)))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--matrix", choices=sorted(MATRICES), default="full")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (printed at the start)")
    parser.add_argument("--out", type=Path, default=Path("chaos-results"))
    parser.add_argument("--duration", type=float, default=None, help="override each scenario's seconds")
    parser.add_argument(
        "--read-from",
        choices=("leader", "any"),
        default="leader",
        help="any: linearizable reads on followers too",
    )
    args = parser.parse_args(argv)
    _chaos.READ_FROM["value"] = args.read_from
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"chaos seed {seed} (replay with --seed {seed})", flush=True)
    scenarios = [s for s in MATRICES[args.matrix] if args.only is None or s.name in args.only]
    if not scenarios:
        print(f"no scenario matches {args.only}", file=sys.stderr)
        return 2
    rows, failed = [], False
    for scenario in scenarios:
        if args.duration is not None:
            scenario = dataclasses.replace(scenario, duration_s=args.duration)
        reason = unavailable_reason(scenario)
        if reason:
            print(f"skip {scenario.name}: {reason}", flush=True)
            continue
        started = time.monotonic()
        report = run_scenario(scenario, seed, args.out)
        row = summary_row(report)
        rows.append(row)
        anomalies = report.get("extra", {}).get("anomalies", [])
        failed |= bool(anomalies)
        took = time.monotonic() - started
        print(f"{scenario.name}: {row['ops']} ops, {len(anomalies)} anomalies, {took:.0f} s", flush=True)
        for line in anomalies[:10]:
            print(f"  ANOMALY {line}", flush=True)
    if rows:
        print_table(rows)
        (args.out / "summary.json").write_text(json.dumps({"seed": seed, "rows": rows}, indent=2))
    return 1 if failed else 0

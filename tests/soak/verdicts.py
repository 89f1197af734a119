"""The soak's verdicts, computed from what it recorded: pure functions, unit-tested.

Issue 6 asks of a 30-minute soak: 0 anomalies; journal bytes and RSS per node flat after
warm-up (the last window's maximum within 1.2x of the first window's after warm-up); no
election caused by compaction (term changes only at injected faults); p99 latency during
compactions within 2x of p99 outside them. Each verdict is `ok` True or False, or None
when the run holds too little data to judge (reported, not counted as a pass).

A compaction is seen, per node and between two samples, by the first signal this build
offers: `snapshots_taken` rising (Status); else `journal_entries` dropping; else the
journal files shrinking or a snapshot file rewritten. Its instant is known to within one
sample period, so "during a compaction" means an op overlapping that interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from tests.chaos.framework import FaultWindow, Op

from .observe import Sample

FLAT_RATIO = 1.2
P99_RATIO = 2.0
MIN_OPS_FOR_P99 = 50


def _reported(samples: Sequence[Sample], node: str, name: str) -> bool:
    return any((getattr(s.nodes[node], name) or 0) > 0 for s in samples if node in s.nodes)


def compaction_intervals(samples: Sequence[Sample], node: str) -> list[tuple[float, float]]:
    """One (previous sample time, sample time) per compaction seen on `node`."""
    by_counter = _reported(samples, node, "snapshots_taken")
    by_entries = not by_counter and _reported(samples, node, "journal_entries")
    found: list[tuple[float, float]] = []
    prev: Sample | None = None
    for sample in samples:
        cur = sample.nodes.get(node)
        before = prev.nodes.get(node) if prev is not None else None
        if cur is not None and before is not None and cur.answered and before.answered:
            same_process = cur.pid == before.pid
            assert prev is not None
            if by_counter:
                now, then = cur.snapshots_taken or 0, before.snapshots_taken or 0
                # A restarted process counts from zero: all it reports was taken since.
                found += [(prev.t, sample.t)] * (now - then if same_process else now)
            elif by_entries:
                if same_process and (cur.journal_entries or 0) < (before.journal_entries or 0):
                    found.append((prev.t, sample.t))
            elif same_process and (
                cur.raft_bytes < before.raft_bytes or cur.snapshot_files != before.snapshot_files
            ):
                found.append((prev.t, sample.t))
        if cur is not None and cur.answered:
            prev = sample
    return found


def compaction_counts(samples: Sequence[Sample], nodes: Iterable[str]) -> dict[str, int]:
    return {node: len(compaction_intervals(samples, node)) for node in nodes}


def flat(
    samples: Sequence[Sample], node: str, metric: str, first: tuple[float, float], last: tuple[float, float]
) -> dict[str, Any]:
    """Is the last window's maximum of `metric` within FLAT_RATIO of the first window's?"""

    def peak(window: tuple[float, float]) -> int | None:
        values = [
            v
            for s in samples
            if window[0] <= s.t <= window[1] and node in s.nodes
            and (v := getattr(s.nodes[node], metric)) is not None
        ]  # fmt: skip
        return max(values) if values else None

    a, b = peak(first), peak(last)
    if a is None or b is None or a <= 0:
        return {"first_max": a, "last_max": b, "ratio": None, "ok": None}
    return {"first_max": a, "last_max": b, "ratio": round(b / a, 3), "ok": b <= FLAT_RATIO * a}


def term_changes(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """Every rise of the highest term seen, with the interval it happened in."""
    changes: list[dict[str, Any]] = []
    last: tuple[float, int] | None = None
    for sample in samples:
        term = sample.term()
        if term is None:
            continue
        if last is not None and term > last[1]:
            changes.append(
                {"after_s": round(last[0], 3), "by_s": round(sample.t, 3), "from": last[1], "to": term}
            )
        last = (sample.t, term)
    return changes


def explained(change: dict[str, Any], faults: Sequence[FaultWindow], grace_s: float) -> bool:
    """A change explained by a fault: it may have happened between its start and grace after its end."""
    return any(
        change["by_s"] >= f.start_s
        and change["after_s"] <= (f.end_s if f.end_s is not None else math.inf) + grace_s
        for f in faults
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _overlaps(op: Op, windows: Sequence[tuple[float, float]]) -> bool:
    return any(op.start_s <= end and op.end_s >= start for start, end in windows)


def p99_during_compactions(
    ops: Sequence[Op],
    compactions: Sequence[tuple[float, float]],
    faults: Sequence[FaultWindow],
    grace_s: float,
) -> dict[str, Any]:
    """p99 latency of ok ops overlapping a compaction vs. the others, both away from faults."""
    fault_windows = [(f.start_s, (f.end_s if f.end_s is not None else math.inf) + grace_s) for f in faults]
    calm = [op for op in ops if op.outcome == "ok" and not _overlaps(op, fault_windows)]
    inside = [(op.end_s - op.start_s) * 1000 for op in calm if _overlaps(op, compactions)]
    outside = [(op.end_s - op.start_s) * 1000 for op in calm if not _overlaps(op, compactions)]
    p_in, p_out = percentile(inside, 99), percentile(outside, 99)
    enough = len(inside) >= MIN_OPS_FOR_P99 and len(outside) >= MIN_OPS_FOR_P99
    ok = p_in <= P99_RATIO * p_out if enough and p_in is not None and p_out is not None else None
    return {"p99_in_ms": p_in, "p99_out_ms": p_out, "ops_in": len(inside), "ops_out": len(outside), "ok": ok}


def throughput(ops: Sequence[Op], bucket_s: float, until_s: float) -> list[dict[str, Any]]:
    """Per bucket of start times: completed-ok ops per second and their p99 latency."""
    buckets = max(1, math.ceil(until_s / bucket_s))
    latencies: list[list[float]] = [[] for _ in range(buckets)]
    for op in ops:
        k = int(op.start_s // bucket_s)
        if op.outcome == "ok" and 0 <= k < buckets:
            latencies[k].append((op.end_s - op.start_s) * 1000)
    return [
        {
            "t": round((k + 0.5) * bucket_s, 3),
            "ops_s": round(len(lat) / bucket_s, 2),
            "p99_ms": percentile(lat, 99),
        }
        for k, lat in enumerate(latencies)
    ]

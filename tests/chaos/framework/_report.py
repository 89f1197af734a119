"""What a chaos run leaves behind: a JSON report, a timeline PNG, and recovery times.

The JSON report is the evidence: it holds every op, so a failed run can be re-checked or
plotted later without running it again (`read_report`, then `History.from_json`). The PNG
is for a person: latency against time, coloured by outcome, with the fault windows shaded,
so "writes stalled for 3 s after the partition healed" is visible at a glance.

Recovery time is measured from the client's side, because that is what a user sees: from an
event (a heal, a leader kill) to the end of the first write that started at or after it and
succeeded. A write that started before the event and happened to finish after it says
nothing about recovery, which is why the start must follow the event.

Recovery alone misses a stall that starts later than its event: a node returning from a
partition with a higher term deposed a healthy leader AT the heal (a 3.5 s stall no
recovery figure showed). The longest write gap is therefore measured wherever it falls: the
longest interval, while writers were active, in which no write was acknowledged.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import math
import os
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Final

from ._history import OUTCOMES, FaultWindow, History, Op

REPORT_FORMAT: Final = 1
# Ops that change state, and so need a working leader and quorum: these measure recovery.
WRITE_FS: Final = frozenset({"write", "cas", "incr", "create", "delete", "rotate"})
OUTCOME_COLOURS: Final = {"ok": "#2ca02c", "fail": "#d62728", "unknown": "#ff7f0e"}
_MARKERS: Final = ("o", "s", "^", "v", "D", "P", "X", "*", "h", "<", ">")
_MIN_LATENCY_MS: Final = 0.01  # the log scale cannot show zero


def write_report(
    path_json: str | os.PathLike[str],
    *,
    scenario: str,
    seed: int,
    history: History | Sequence[Op],
    faults: Sequence[FaultWindow],
    checks: Mapping[str, Any],
    extra: Mapping[str, Any],
    recovery_events: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Write the run's report as JSON and return it, as the plain data that was written.

    `checks` holds each checker's findings (anomalies first); `CheckResult`s and other
    dataclasses are turned into dicts. Recovery is measured from `recovery_events`, by
    default from each fault's heal. The file is replaced atomically: a run killed while
    writing leaves the previous report, not half of one.
    """
    ops = _ops(history)
    if recovery_events is None:
        recovery_events = [f.end_s for f in faults if f.end_s is not None]
    delays = recovery_times(ops, recovery_events)
    report: dict[str, Any] = _jsonable(
        {
            "format": REPORT_FORMAT,
            "scenario": scenario,
            "seed": seed,
            "duration_s": max((op.end_s for op in ops), default=0.0),
            "counts": count_ops(ops),
            "unknown": sum(op.outcome == "unknown" for op in ops),
            "faults": [f.to_json() for f in faults],
            "checks": checks,
            "recovery": {
                "events_s": list(recovery_events),
                "delays_s": delays,
                "summary": summarise(delays),
            },
            "write_gap": longest_write_gap(ops),
            "extra": extra,
            "ops": [op.to_json() for op in ops],
        }
    )
    path = Path(path_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    partial.replace(path)
    return report


def read_report(path_json: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a report; `History.from_json(report["ops"])` rebuilds its history."""
    report: dict[str, Any] = json.loads(Path(path_json).read_text(encoding="utf-8"))
    if report.get("format") != REPORT_FORMAT:
        raise ValueError(f"{path_json}: report format {report.get('format')!r}, expected {REPORT_FORMAT}")
    return report


def count_ops(history: History | Sequence[Op]) -> dict[str, Any]:
    """Ops by outcome, and by function then outcome (every outcome present, zeros too)."""
    ops = _ops(history)
    by_outcome = Counter(op.outcome for op in ops)
    by_f: dict[str, dict[str, int]] = {}
    for op in ops:
        by_f.setdefault(op.f, dict.fromkeys(OUTCOMES, 0))[op.outcome] += 1
    return {
        "total": len(ops),
        "by_outcome": {outcome: by_outcome[outcome] for outcome in OUTCOMES},
        "by_f": dict(sorted(by_f.items())),
    }


def recovery_times(history: History | Sequence[Op], events: Sequence[float]) -> list[float]:
    """For each event time, seconds until the end of the first ok write starting at or after it.

    `math.inf` when no such write exists (the cluster never recovered within the run).
    """
    writes = sorted((op.start_s, op.end_s) for op in _ops(history) if op.outcome == "ok" and op.f in WRITE_FS)
    starts = [start for start, _ in writes]
    # earliest_end[k]: the earliest end among writes k.. (those starting no sooner than k).
    earliest_end = [math.inf] * (len(writes) + 1)
    for k in range(len(writes) - 1, -1, -1):
        earliest_end[k] = min(writes[k][1], earliest_end[k + 1])
    return [earliest_end[bisect.bisect_left(starts, event)] - event for event in events]


@dataclasses.dataclass(frozen=True, slots=True)
class WriteGap:
    """The longest stretch without an acknowledged write: from `start_s` to `end_s`."""

    length_s: float
    start_s: float
    end_s: float


def longest_write_gap(history: History | Sequence[Op]) -> WriteGap | None:
    """The longest interval, while writers were active, in which no write was acknowledged.

    Writers are active from the start of the first write to the end of the last one,
    whatever its outcome; inside that window a write is acknowledged at the end of an ok
    write. The window's edges count as boundaries, so a run that stalls until its last
    (failed) attempt shows that stall. None when the history holds no write.
    """
    writes = [op for op in _ops(history) if op.f in WRITE_FS]
    if not writes:
        return None
    first = min(op.start_s for op in writes)
    last = max(op.end_s for op in writes)
    marks = [first, *sorted(op.end_s for op in writes if op.outcome == "ok"), last]
    start, end = max(itertools.pairwise(marks), key=lambda pair: pair[1] - pair[0])
    return WriteGap(length_s=end - start, start_s=start, end_s=end)


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """Median and maximum of the finite values; infinite ones are counted as unrecovered."""
    finite = [v for v in values if math.isfinite(v)]
    return {
        "n": len(values),
        "p50": statistics.median(finite) if finite else None,
        "max": max(finite) if finite else None,
        "unrecovered": len(values) - len(finite),
    }


def plot_timeline(
    path_png: str | os.PathLike[str],
    history: History | Sequence[Op],
    faults: Sequence[FaultWindow],
    title: str,
) -> None:
    """Draw each op's latency (log scale) against its start time, faults shaded.

    Raises RuntimeError if matplotlib is missing: the JSON report does not need it.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.transforms import blended_transform_factory
    except ImportError as exc:
        raise RuntimeError("plot_timeline needs the matplotlib package (pip install matplotlib)") from exc

    ops = _ops(history)
    # The object API with an explicit Agg canvas: no pyplot global state, no GUI backend.
    fig = Figure(figsize=(12, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x_max = max([op.end_s for op in ops] + [f.end_s or f.start_s for f in faults] + [1.0])

    fs = sorted({op.f for op in ops})
    markers = {f: _MARKERS[k % len(_MARKERS)] for k, f in enumerate(fs)}
    counts = Counter(op.outcome for op in ops)
    latencies = [_latency_ms(op) for op in ops] or [1.0]
    low, high = min(latencies), max(latencies)
    for outcome in OUTCOMES:
        for f in fs:
            group = [op for op in ops if op.outcome == outcome and op.f == f]
            if group:
                ax.scatter(
                    [op.start_s for op in group],
                    [_latency_ms(op) for op in group],
                    # Failures larger and on top: they are the news.
                    s=10 if outcome == "ok" else 24,
                    c=OUTCOME_COLOURS[outcome],
                    marker=markers[f],
                    alpha=0.5 if outcome == "ok" else 0.9,
                    linewidths=0,
                    zorder=3 if outcome == "ok" else 4,
                )

    top = blended_transform_factory(ax.transData, ax.transAxes)
    for k, fault in enumerate(faults):
        end = fault.end_s if fault.end_s is not None else x_max
        ax.axvspan(fault.start_s, max(end, fault.start_s + x_max / 500), color="#d62728", alpha=0.1, lw=0)
        label = fault.name if fault.end_s is not None else f"{fault.name} (not healed)"
        # Staggered rows, so that labels of close faults do not overwrite each other.
        ax.text(
            fault.start_s, 0.97 - 0.05 * (k % 3), label, transform=top, fontsize=8, va="top", color="#8b0000"
        )

    ax.set_yscale("log")
    # Headroom above the slowest op (about a quarter of the height) for the fault labels.
    ax.set_ylim(low / 2, high * max(high / low, 10) ** 0.4)
    ax.set_xlim(0, x_max * 1.01)
    ax.set_xlabel("time since the run started (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.grid(True, which="major", axis="both", alpha=0.3)
    outcome_handles = [
        Line2D([], [], ls="", marker="o", color=OUTCOME_COLOURS[o], label=f"{o} ({counts[o]})")
        for o in OUTCOMES
    ]
    f_handles = [Line2D([], [], ls="", marker=markers[f], color="#555555", label=f) for f in fs]
    if faults:
        f_handles.append(Line2D([], [], lw=8, color="#d62728", alpha=0.1, label="fault active"))
    outcome_legend = ax.legend(
        handles=outcome_handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="outcome"
    )
    ax.add_artist(outcome_legend)
    ax.legend(handles=f_handles, loc="lower left", bbox_to_anchor=(1.01, 0.0), title="op")
    fig.tight_layout()
    fig.savefig(os.fspath(path_png))


def _latency_ms(op: Op) -> float:
    return max((op.end_s - op.start_s) * 1000, _MIN_LATENCY_MS)


def _ops(history: History | Sequence[Op]) -> list[Op]:
    return history.ops() if isinstance(history, History) else sorted(history, key=lambda op: op.start_s)


def _jsonable(value: Any) -> Any:
    """Plain JSON data from dataclasses, mappings, sequences, paths and enums.

    Non-finite floats become None (JSON has no infinity); anything else becomes its repr,
    so an odd value in `extra` cannot cost the report of a long run.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [_jsonable(v) for v in items]
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)

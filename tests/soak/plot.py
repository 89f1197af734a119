"""The soak's PNG: five panels over the run's time, every fault shaded on each.

Journal (Raft files) bytes per node, with Status' journal entries where reported and a
tick per compaction (one row per node); RSS per node; ok ops/s and p99 latency; the
highest term seen. Dashed lines bound the two windows the "flat" verdicts compare.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from tests.chaos.framework import FaultWindow

from .observe import Sample

MIB = 1024 * 1024
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


def plot(
    path_png: str | os.PathLike[str],
    samples: Sequence[Sample],
    rates: Sequence[Mapping[str, Any]],
    faults: Sequence[FaultWindow],
    compactions: Mapping[str, Sequence[tuple[float, float]]],
    windows: Sequence[tuple[float, float]],
    title: str,
) -> None:
    """`windows`: the verdicts' (first, last) windows. RuntimeError if matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise RuntimeError("the soak plot needs matplotlib (pip install matplotlib)") from exc

    nodes = sorted({n for s in samples for n in s.nodes})
    colour = {n: COLOURS[k % len(COLOURS)] for k, n in enumerate(nodes)}
    fig = Figure(figsize=(13, 14), dpi=90)
    FigureCanvasAgg(fig)
    journal, rss, load, term = fig.subplots(4, 1, sharex=True)
    t = [s.t for s in samples]

    for node in nodes:
        series = [s.nodes.get(node) for s in samples]
        journal.plot(t, [n.raft_bytes / MIB if n else None for n in series], color=colour[node], label=node)
        rss.plot(
            t,
            [n.rss_bytes / MIB if n and n.rss_bytes else None for n in series],
            color=colour[node],
            label=node,
        )
        row = nodes.index(node) * 0.04  # one row of ticks per node: they compact at similar times
        for start, end in compactions.get(node, ()):
            journal.axvline((start + end) / 2, ymin=row, ymax=row + 0.035, color=colour[node], lw=0.8)
    entries = journal.twinx()
    for node in nodes:
        values = [s.nodes[node].journal_entries if node in s.nodes else None for s in samples]
        if any(v for v in values):
            entries.plot(t, values, color=colour[node], ls=":", lw=1)
    entries.set_ylabel("journal entries (dotted; Status)")
    journal.set_ylabel("Raft files (MiB)\nticks: compactions")
    journal.legend(loc="upper left")
    rss.set_ylabel("RSS (MiB)")

    rt = [r["t"] for r in rates]
    load.plot(rt, [r["ops_s"] for r in rates], color="#2ca02c", label="ok ops/s")
    load.set_ylabel("ok ops/s")
    p99 = load.twinx()
    p99.plot(rt, [r["p99_ms"] for r in rates], color="#d62728", lw=1, label="p99 (ms)")
    p99.set_ylabel("p99 latency (ms)", color="#d62728")
    p99.set_yscale("log")

    term.step(t, [s.term() for s in samples], where="post", color="#333333")
    term.set_ylabel("highest term")
    term.set_xlabel("time since the load started (s)")

    for k, fault in enumerate(faults):
        end = fault.end_s if fault.end_s is not None else (t[-1] if t else fault.start_s)
        for ax in (journal, rss, load, term):
            ax.axvspan(fault.start_s, max(end, fault.start_s + 0.5), color="#d62728", alpha=0.12, lw=0)
        journal.annotate(
            fault.name, (fault.start_s, 1.0), xycoords=("data", "axes fraction"),
            xytext=(0, -12 - 10 * (k % 4)), textcoords="offset points", fontsize=7, color="#8b0000",
        )  # fmt: skip
    for start, end in windows:
        for ax in (journal, rss):
            ax.axvline(start, color="#777777", ls="--", lw=0.8)
            ax.axvline(end, color="#777777", ls="--", lw=0.8)
    for ax in (journal, rss, load, term):
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.fspath(path_png))

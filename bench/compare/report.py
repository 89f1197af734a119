"""Medians over repetitions, the ratios of sessionquorum to each anchor, and their outputs.

A figure is the median of the repetitions of one cell (target, mix, clients); its min and
max are kept to show the spread. Ratios are taken between medians: ops/s of sessionquorum
over ops/s of the anchor (above 1 is faster), and p50 of sessionquorum over p50 of the
anchor (below 1 is faster).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .driver import Sample

SUBJECTS = ("sq-grpc", "sq-client", "sq-async")
ANCHORS = ("etcd", "redis")


@dataclass(frozen=True, slots=True)
class Median:
    target: str
    mix: str
    clients: int
    repetitions: int
    ops_per_s: float
    ops_per_s_min: float
    ops_per_s_max: float
    p50_ms: float
    p99_ms: float
    client_cpu_s: float
    server_cpu_s: float
    server_cpu_max_s: float
    errors: dict[str, int]


@dataclass(frozen=True, slots=True)
class Ratio:
    mix: str
    clients: int
    subject: str
    anchor: str
    ops_ratio: float
    p50_ratio: float


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def medians(samples: Sequence[Sample]) -> list[Median]:
    """One Median per cell, in the order the cells first ran."""
    groups: dict[tuple[str, str, int], list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[(sample.target, sample.mix, sample.clients)].append(sample)
    result = []
    for (target, mix, clients), group in groups.items():
        errors: Counter[str] = Counter()
        for sample in group:
            errors.update(sample.errors)
            if sample.stuck_workers:
                errors["stuck_workers"] += sample.stuck_workers
        rates = [s.ops_per_s for s in group]
        result.append(
            Median(
                target=target,
                mix=mix,
                clients=clients,
                repetitions=len(group),
                ops_per_s=_median(rates),
                ops_per_s_min=min(rates),
                ops_per_s_max=max(rates),
                p50_ms=_median([s.p50_ms for s in group]),
                p99_ms=_median([s.p99_ms for s in group]),
                client_cpu_s=_median([s.client_cpu_s for s in group]),
                server_cpu_s=_median([s.server_cpu_s for s in group]),
                server_cpu_max_s=_median([s.server_cpu_max_s for s in group]),
                errors=dict(sorted(errors.items())),
            )
        )
    return result


def _div(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def ratios(rows: Sequence[Median]) -> list[Ratio]:
    """Each subject against each anchor, and the public clients against raw gRPC, per cell."""
    by_cell = {(m.target, m.mix, m.clients): m for m in rows}
    cells = list(dict.fromkeys((m.mix, m.clients) for m in rows))
    pairs = [(s, a) for s in SUBJECTS for a in ANCHORS] + [("sq-client", "sq-grpc"), ("sq-async", "sq-grpc")]
    result = []
    for mix, clients in cells:
        for subject, anchor in pairs:
            s, a = by_cell.get((subject, mix, clients)), by_cell.get((anchor, mix, clients))
            if s is not None and a is not None:
                ops, p50 = _div(s.ops_per_s, a.ops_per_s), _div(s.p50_ms, a.p50_ms)
                result.append(Ratio(mix, clients, subject, anchor, ops, p50))
    return result


# -- text ---------------------------------------------------------------------------------


def _num(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def format_tables(rows: Sequence[Median], pairs: Sequence[Ratio]) -> str:
    header = (
        f"{'mix':<6} {'clients':>7}  {'system':<10} {'ops/s':>8} {'(min-max)':>15} {'p50 ms':>8}"
        f" {'p99 ms':>8} {'cli cpu s':>9} {'srv cpu s':>9} {'busiest':>8}  errors"
    )
    lines = [header, "-" * len(header)]
    for m in rows:
        spread = f"{m.ops_per_s_min:.0f}-{m.ops_per_s_max:.0f}"
        errors = ", ".join(f"{k}={v}" for k, v in m.errors.items()) or "0"
        lines.append(
            f"{m.mix:<6} {m.clients:>7}  {m.target:<10} {_num(m.ops_per_s, '.0f'):>8} {spread:>15}"
            f" {_num(m.p50_ms, '.2f'):>8} {_num(m.p99_ms, '.2f'):>8} {m.client_cpu_s:>9.2f}"
            f" {m.server_cpu_s:>9.2f} {m.server_cpu_max_s:>8.2f}  {errors}"
        )
    if pairs:
        lines += ["", f"{'mix':<6} {'clients':>7}  {'ratio':<20} {'ops/s':>8} {'p50':>8}"]
        lines.append("-" * len(lines[-1]))
        for r in pairs:
            name = f"{r.subject} / {r.anchor}"
            lines.append(
                f"{r.mix:<6} {r.clients:>7}  {name:<20} {_num(r.ops_ratio, '.2f') + 'x':>8}"
                f" {_num(r.p50_ratio, '.2f') + 'x':>8}"
            )
    return "\n".join(lines)


# -- files --------------------------------------------------------------------------------


def _json_safe(value: object) -> object:
    """NaN (a cell without one success) becomes null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json(
    path: Path,
    run: dict[str, object],
    samples: Sequence[Sample],
    rows: Sequence[Median],
    pairs: Sequence[Ratio],
) -> None:
    document = {
        **run,
        "medians": [asdict(m) for m in rows],
        "ratios": [asdict(r) for r in pairs],
        "samples": [asdict(s) for s in samples],
    }
    path.write_text(json.dumps(_json_safe(document), indent=2, allow_nan=False, default=str) + "\n")


def write_chart(path: Path, rows: Sequence[Median], title: str) -> None:
    """Grouped bars per cell: ops/s (with the min-max spread) above, p50 latency (log) below."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the chart only goes to a file
    import matplotlib.pyplot as plt

    cells = list(dict.fromkeys((m.mix, m.clients) for m in rows))
    targets = list(dict.fromkeys(m.target for m in rows))
    by_cell = {(m.target, m.mix, m.clients): m for m in rows}
    width = 0.8 / max(1, len(targets))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8.0, 1.4 * len(cells) + 3), 8), sharex=True)
    for i, target in enumerate(targets):
        xs, rates, low, high, p50 = [], [], [], [], []
        for j, cell in enumerate(cells):
            m = by_cell.get((target, *cell))
            if m is None or math.isnan(m.ops_per_s):
                continue
            xs.append(j + (i - (len(targets) - 1) / 2) * width)
            rates.append(m.ops_per_s)
            low.append(m.ops_per_s - m.ops_per_s_min)
            high.append(m.ops_per_s_max - m.ops_per_s)
            p50.append(m.p50_ms)
        top.bar(xs, rates, width, yerr=[low, high], capsize=2, label=target)
        bottom.bar(xs, p50, width, label=target)
    top.set_ylabel("ops/s (median, min-max)")
    top.set_title(title)
    top.legend()
    bottom.set_ylabel("p50 latency, ms (log)")
    bottom.set_yscale("log")
    bottom.set_xticks(range(len(cells)), [f"{mix}\n{clients} clients" for mix, clients in cells])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

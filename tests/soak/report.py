"""The soak's report: every verdict issue 6 asks for, proof the run did what it claims,
and the short summary printed at the end.

The JSON holds the plan, the verdicts, the facts each fault recorded, the fault windows,
term changes, compaction counts, throughput per bucket and every sample; the ops go to a
gzipped JSON-lines file beside it, so a long run's report stays readable.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any

from tests.chaos.framework import History
from tests.chaos.framework._report import count_ops

from . import verdicts as v
from .faults import Faults
from .observe import Sample
from .plan import SoakPlan

REPORT_FORMAT = 1


def judge(
    plan: SoakPlan,
    samples: list[Sample],
    history: History,
    faults: Faults,
    anomalies: list[str],
    checks: dict[str, Any],
    load_end_s: float,
) -> dict[str, Any]:
    """The report: every verdict the issue asks for, and proof the run did what it claims."""
    ops = history.ops()
    nodes = sorted({n for s in samples for n in s.nodes})
    first, last = plan.windows()
    intervals = {n: v.compaction_intervals(samples, n) for n in nodes}
    changes = v.term_changes(samples)
    unexplained = [c for c in changes if not v.explained(c, faults.windows, plan.fault_grace_s)]
    facts = faults.facts
    counts = count_ops(ops)
    verdicts: dict[str, Any] = {
        "anomalies": {"count": len(anomalies), "ok": not anomalies},
        "history_checked": {"undecided_keys": checks["undecided_keys"], "ok": not checks["undecided_keys"]},
        "journal_flat": {n: v.flat(samples, n, "raft_bytes", first, last) for n in nodes},
        "rss_flat": {n: v.flat(samples, n, "rss_bytes", first, last) for n in nodes},
        "terms_only_at_faults": {"changes": len(changes), "unexplained": unexplained, "ok": not unexplained},
        "p99_compactions": v.p99_during_compactions(
            ops, [i for n in nodes for i in intervals[n]], faults.windows, plan.fault_grace_s
        ),
        "did_what_it_claims": _claims(plan, intervals, facts, counts),
    }
    ok = all(_passes(verdict) for verdict in verdicts.values())
    return {
        "format": REPORT_FORMAT,
        "ok": ok,
        "plan": dataclasses.asdict(plan),
        "windows": {"first": first, "last": last},
        "nodes": nodes,
        "verdicts": verdicts,
        "anomalies": anomalies[:200],
        "facts": facts,
        "faults": [f.to_json() for f in faults.windows],
        "term_changes": changes,
        "compactions": {n: len(i) for n, i in intervals.items()},
        "counts": counts,
        "checks": checks,
        "load_s": round(load_end_s, 3),
        "throughput": v.throughput(ops, 5.0 if plan.duration_s >= 600 else 2.0, load_end_s),
        "samples": [s.to_json() for s in samples],
    }


def _claims(
    plan: SoakPlan,
    intervals: dict[str, list[tuple[float, float]]],
    facts: dict[str, Any],
    counts: dict[str, Any],
) -> dict[str, Any]:
    compactions = {n: len(i) for n, i in intervals.items()}
    long_down = facts.get("long_down", {})
    found = {
        "history_ops_ok": counts["by_outcome"]["ok"],
        "compactions_per_node": compactions,
        "min_compactions_per_node": plan.min_compactions_per_node,
        "follower_killed": "kill_follower" in facts,
        "long_down_needed_snapshot": bool(long_down.get("needed_snapshot")),
        "long_down_caught_up": long_down.get("catch_up_s") is not None,
        "clock_pushed_ahead": "clock_ahead" in facts,
        "fault_errors": facts.get("errors", []),
    }
    found["ok"] = (
        found["history_ops_ok"] > 0
        and bool(compactions)
        and min(compactions.values()) >= plan.min_compactions_per_node
        and found["follower_killed"]
        and found["long_down_needed_snapshot"]
        and found["long_down_caught_up"]
        and found["clock_pushed_ahead"]
        and not found["fault_errors"]
    )
    return found


def _passes(verdict: dict[str, Any]) -> bool:
    """False only when some part says ok: False (None means "not enough data to judge")."""
    if "ok" in verdict:
        return verdict["ok"] is not False
    return all(part.get("ok") is not False for part in verdict.values())


def write(out_dir: Path, report: dict[str, Any], history: History) -> None:
    path = out_dir / "soak.json"
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    partial.replace(path)
    with gzip.open(out_dir / "soak-history.jsonl.gz", "wt", encoding="utf-8") as f:
        for op in history.to_json():
            f.write(json.dumps(op, default=str) + "\n")


def summary(report: dict[str, Any]) -> str:
    vd = report["verdicts"]
    claims = vd["did_what_it_claims"]
    counts = report["counts"]
    undecided = len(vd["history_checked"]["undecided_keys"])
    led_again = report["facts"].get("clock_ahead", {}).get("became_leader_again", "not done")
    lines = [
        f"soak {report['plan']['duration_s'] / 60:.1f} min, seed {report['seed']}: "
        f"{'PASS' if report['ok'] else 'FAIL'}",
        f"  ops: {counts['total']} ({counts['by_outcome']}); "
        f"anomalies: {vd['anomalies']['count']}; undecided keys: {undecided}",
        f"  compactions per node: {claims['compactions_per_node']} "
        f"(need >= {claims['min_compactions_per_node']})",
        f"  faults: follower killed {claims['follower_killed']}; long-down needed a snapshot "
        f"{claims['long_down_needed_snapshot']}, caught up {claims['long_down_caught_up']}; "
        f"clock-ahead node led again: {led_again} {_mark(claims['ok'])}",
    ]
    for metric in ("journal_flat", "rss_flat"):
        parts = [
            f"{n} {r['first_max']}->{r['last_max']} x{r['ratio']} {_mark(r['ok'])}"
            for n, r in vd[metric].items()
        ]
        lines.append(f"  {metric}: " + "; ".join(parts))
    terms = vd["terms_only_at_faults"]
    lines.append(
        f"  term changes: {terms['changes']}, unexplained {len(terms['unexplained'])} {_mark(terms['ok'])}"
    )
    p99 = vd["p99_compactions"]
    lines.append(
        f"  p99 during compactions {p99['p99_in_ms']} ms ({p99['ops_in']} ops) vs outside "
        f"{p99['p99_out_ms']} ms ({p99['ops_out']} ops) {_mark(p99['ok'])}"
    )
    lines += [f"  anomaly: {a}" for a in report["anomalies"][:10]]
    return "\n".join(lines)


def _mark(ok: bool | None) -> str:
    return "ok" if ok else "FAIL" if ok is False else "(not judged)"

"""A/B two source trees (worktrees) with `bench.compare`, alternating whole invocations.

    python -m bench.ab_trees --tree old=/work/wt-perf-old --tree new=/work/wt-perf [--rounds 3] \\
        -- --targets sq-client --mixes mixed,read --clients 1,64 --duration-s 5

Each round runs `python -m bench.compare ARGS --repetitions 1` once per tree, in the order
given and reversed every other round (A B, B A, A B, ...), with the tree's own venv
(`TREE/.venv/bin/python`) and working directory: each variant is its own code and its own
cluster. On a shared, noisy machine only such interleaved figures compare; a cell measured
at one time against a cell measured minutes later does not. Prints every cell of every
round and, per cell, the median over rounds of each tree: ops/s, p50, and the busiest
server process's CPU per call (the leader's, which varies less with the neighbours' load).
Each invocation stops what it started (bench.compare's own guarantee); nothing else starts.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

INVOCATION_TIMEOUT_S = 1800


@dataclass(frozen=True, slots=True)
class Cell:
    name: str  # "sq-client mixed@64"
    ops_per_s: float
    p50_ms: float
    # CPU of the busiest server process (the leader, under these workloads) per successful
    # call, in microseconds: less at the mercy of neighbours' load than ops/s.
    busiest_us_per_op: float
    # The load generator's own CPU (the client library included) per successful call.
    client_us_per_op: float
    errors: int


def _run_once(name: str, tree: Path, compare_args: list[str]) -> list[Cell]:
    with tempfile.TemporaryDirectory(prefix=f"ab-trees-{name}-") as out:
        cmd = [str(tree / ".venv/bin/python"), "-m", "bench.compare", *compare_args]
        cmd += ["--repetitions", "1", "--out", out]
        done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=INVOCATION_TIMEOUT_S)
        if done.returncode != 0:
            raise SystemExit(f"{name}: bench.compare exited {done.returncode}:\n{done.stderr[-2000:]}")
        found = sorted(Path(out).glob("compare-*.json"))
        if not found:
            raise SystemExit(f"{name}: bench.compare wrote no JSON:\n{done.stderr[-2000:]}")
        document = json.loads(found[-1].read_text())
    cells = []
    for sample in document["samples"]:
        errors = sum(sample["errors"].values())
        if errors:
            print(f"  {name}: {sample['target']} {sample['mix']}@{sample['clients']}: {sample['errors']}")
        cells.append(
            Cell(
                f"{sample['target']} {sample['mix']}@{sample['clients']}",
                sample["ops_per_s"],
                sample["p50_ms"] if sample["p50_ms"] is not None else math.nan,
                1e6 * sample["server_cpu_max_s"] / max(1, sample["ops"]),
                1e6 * sample["client_cpu_s"] / max(1, sample["ops"]),
                errors,
            )
        )
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab_trees", description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH, given twice or more")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("compare_args", nargs=argparse.REMAINDER, help="-- then bench.compare's arguments")
    args = parser.parse_args(argv)
    trees = [(n, Path(p)) for n, _, p in (t.partition("=") for t in args.tree)]
    compare_args = [a for a in args.compare_args if a != "--"]
    seen: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for round_no in range(max(1, args.rounds)):
        order = trees if round_no % 2 == 0 else list(reversed(trees))
        for name, tree in order:
            started = time.strftime("%H:%M:%S")
            for cell in _run_once(name, tree, compare_args):
                seen[(cell.name, name)].append(cell)
                print(
                    f"round {round_no + 1} {started} {name:>6} {cell.name:<22} {cell.ops_per_s:8.0f} ops/s  "
                    f"p50 {cell.p50_ms:6.2f} ms  busiest server {cell.busiest_us_per_op:6.0f} us/op  "
                    f"client {cell.client_us_per_op:6.0f} us/op"
                )
            sys.stdout.flush()
    print(
        "\nmedians over rounds: ops/s, (x) = / the first tree's, p50 ms, "
        "CPU us per op of the busiest server / the client"
    )
    first = trees[0][0]
    for cell_name in sorted({cell for cell, _ in seen}):
        parts = []
        base = statistics.median(c.ops_per_s for c in seen[(cell_name, first)])
        for name, _ in trees:
            cells = seen[(cell_name, name)]
            o = statistics.median(c.ops_per_s for c in cells)
            p = statistics.median(c.p50_ms for c in cells)
            u = statistics.median(c.busiest_us_per_op for c in cells)
            k = statistics.median(c.client_us_per_op for c in cells)
            parts.append(f"{name} {o:6.0f} ({o / base:.2f}x) p50 {p:5.2f} cpu {u:4.0f}/{k:4.0f}")
        print(f"{cell_name:<22} " + " | ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

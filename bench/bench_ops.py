"""Throughput and latency of the client's operations against a real local 3-node cluster.

    .venv/bin/python bench/bench_ops.py [--duration-s 5] [--concurrency 1,8,64]
                                        [--ops create,validate,update,mixed] [--json OUT]

Each phase runs N threads that share ONE SessionClient (as an application would) for a
fixed time, after a short warm-up. A reference phase with the same harness calls the
leader's Status RPC, a gRPC round trip that writes nothing to Raft; dividing by it makes
figures comparable across machines (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from sessionquorum.client import SessionClient, TLSConfig
from sessionquorum.cluster import LocalCluster
from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

NODES = 3
WARMUP_S = 0.5
POOL_SIZE = 1_000
POOL_THREADS = 16
VALUE_BYTES = 300
ATTRIBUTE = "data"
# Per call, below the client's 10 s default: a phase overruns its duration by at most this.
OP_TIMEOUT_S = 5.0
JOIN_GRACE_S = OP_TIMEOUT_S + 2.0
LEADER_TIMEOUT_S = 30.0
CONVERGE_TIMEOUT_S = 30.0
CONVERGE_POLL_S = 0.2
REF = "ref"
REF_LABEL = "ref: grpc round trip"
OPS = ("create", "validate", "update", "mixed")
# mixed: cumulative thresholds over rng.random() -> 80 % validate, 10 % create, 10 % update.
MIX_VALIDATE = 0.8
MIX_CREATE = 0.9
LOG_MARKERS = ("Traceback", "ERROR", "CRITICAL", "WARNING")
LOG_SAMPLES = 5

Op = Callable[[random.Random], object]


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """One (op, concurrency) phase; `ops` counts successful calls only."""

    op: str
    concurrency: int
    elapsed_s: float
    ops: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    stuck_threads: int


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What a node left behind: peak RSS, how it stopped, notable log lines."""

    node_id: str
    peak_rss_mib: float | None
    exit_code: int | None
    log_counts: dict[str, int]
    log_samples: list[str]


# -- measuring ---------------------------------------------------------------------------


def _percentile_ms(sorted_s: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, in milliseconds; NaN when nothing succeeded."""
    if not sorted_s:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_s)))
    return sorted_s[rank - 1] * 1000.0


def _worker(op: Op, rng: random.Random, stop_at: float, latencies: list[float], errors: Counter[str]) -> None:
    # Errors are counted, not fatal: they are findings, and one must not end the phase.
    while (started := time.perf_counter()) < stop_at:
        try:
            op(rng)
        except Exception as exc:
            errors[type(exc).__name__] += 1
            continue
        latencies.append(time.perf_counter() - started)


def run_phase(name: str, op: Op, concurrency: int, duration_s: float, seed: int) -> PhaseResult:
    """Run `op` in `concurrency` threads for `duration_s`; each thread stops by itself."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[Counter[str]] = [Counter() for _ in range(concurrency)]
    started = time.perf_counter()
    stop_at = started + duration_s
    threads = [
        threading.Thread(
            target=_worker,
            args=(op, random.Random(seed * 1_000 + i), stop_at, latencies[i], errors[i]),
            name=f"bench-{name}-{i}",
            daemon=True,  # a call stuck past its own timeout must not keep the process alive
        )
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    join_deadline = stop_at + JOIN_GRACE_S
    for thread in threads:
        thread.join(max(0.0, join_deadline - time.perf_counter()))
    elapsed_s = time.perf_counter() - started
    stuck = sum(thread.is_alive() for thread in threads)
    merged = sorted(x for per_thread in latencies for x in list(per_thread))
    total_errors: Counter[str] = Counter()
    for per_thread in errors:
        total_errors.update(dict(per_thread))
    return PhaseResult(
        op=name,
        concurrency=concurrency,
        elapsed_s=elapsed_s,
        ops=len(merged),
        ops_per_s=len(merged) / elapsed_s,
        p50_ms=_percentile_ms(merged, 0.50),
        p99_ms=_percentile_ms(merged, 0.99),
        errors=dict(sorted(total_errors.items())),
        stuck_threads=stuck,
    )


# -- the workload ------------------------------------------------------------------------


class Workload:
    """The benchmarked calls; validate and update pick from a pool of existing sessions."""

    def __init__(self, client: SessionClient, status_stub: pb_grpc.SessionStoreStub) -> None:
        self._client = client
        self._status_stub = status_stub
        self._tokens: list[str] = []
        self._pool_lock = threading.Lock()
        self.pool_errors: Counter[str] = Counter()

    def fill_pool(self, size: int) -> None:
        """Create `size` sessions before any timing; failures are counted, not retried."""
        with ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="bench-pool") as pool:
            results = list(pool.map(self._try_create, range(size)))
        self._tokens = [token for token in results if token is not None]
        if not self._tokens:
            raise RuntimeError(f"could not create any pool session: {dict(self.pool_errors)}")

    def _try_create(self, i: int) -> str | None:
        try:
            return self._client.create(attributes={ATTRIBUTE: random.Random(i).randbytes(VALUE_BYTES)}).token
        except Exception as exc:
            with self._pool_lock:
                self.pool_errors[type(exc).__name__] += 1
            return None

    @property
    def pool_size(self) -> int:
        return len(self._tokens)

    def op(self, name: str) -> Op:
        ops: dict[str, Op] = {
            REF: self.status,
            "create": self.create,
            "validate": self.validate,
            "update": self.update,
            "mixed": self.mixed,
        }
        return ops[name]

    def status(self, rng: random.Random) -> object:
        return self._status_stub.Status(pb.StatusRequest(), timeout=OP_TIMEOUT_S)

    def create(self, rng: random.Random) -> object:
        return self._client.create(attributes={ATTRIBUTE: rng.randbytes(VALUE_BYTES)}, timeout_s=OP_TIMEOUT_S)

    def validate(self, rng: random.Random) -> object:
        return self._client.validate(rng.choice(self._tokens), timeout_s=OP_TIMEOUT_S)

    def update(self, rng: random.Random) -> object:
        token = rng.choice(self._tokens)
        return self._client.update(token, set={ATTRIBUTE: rng.randbytes(VALUE_BYTES)}, timeout_s=OP_TIMEOUT_S)

    def mixed(self, rng: random.Random) -> object:
        draw = rng.random()
        if draw < MIX_VALIDATE:
            return self.validate(rng)
        if draw < MIX_CREATE:
            return self.create(rng)
        return self.update(rng)


def run_all(
    workload: Workload, ops: Sequence[str], concurrencies: Sequence[int], duration_s: float
) -> list[PhaseResult]:
    results = []
    for seed, (name, concurrency) in enumerate((o, c) for o in (REF, *ops) for c in concurrencies):
        op = workload.op(name)
        run_phase(name, op, concurrency, WARMUP_S, seed=-seed - 1)
        results.append(run_phase(name, op, concurrency, duration_s, seed=seed))
    return results


# -- the machine and the nodes -----------------------------------------------------------


def peak_rss_mib(pid: int | str) -> float | None:
    """VmHWM of a process in MiB, or None if it is gone or the kernel does not say."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # reported in kB
    return None


def scan_log(path: Path) -> tuple[dict[str, int], list[str]]:
    """Counts of notable lines in a node log, and the first few distinct ones."""
    counts: Counter[str] = Counter()
    samples: list[str] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}, []
    for line in lines:
        marker = next((m for m in LOG_MARKERS if m in line), None)
        if marker is None:
            continue
        counts[marker] += 1
        if len(samples) < LOG_SAMPLES and line not in samples:
            samples.append(line)
    return dict(counts), samples


def machine_facts() -> dict[str, object]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def convergence(cluster: LocalCluster) -> str:
    """Whether the replicas hold identical state once they applied the same log.

    Checked after the load because a benchmark is the heaviest replication traffic we run;
    a mismatch is a correctness bug, not a performance figure.
    """
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    seen = "no answer"
    while time.monotonic() < deadline:
        statuses = cluster.statuses(digest=True)
        if all(s is not None for s in statuses.values()):
            applied = {n: s.last_applied for n, s in statuses.items() if s is not None}
            digests = {n: s.state_digest[:12] for n, s in statuses.items() if s is not None}
            counts = {n: s.session_count for n, s in statuses.items() if s is not None}
            seen = f"last_applied {applied}, digests {digests}, sessions {counts}"
            if len(set(applied.values())) == 1:
                verdict = "identical" if len(set(digests.values())) == 1 else "DIVERGED"
                return f"{verdict}: {seen}"
        time.sleep(CONVERGE_POLL_S)
    return f"UNKNOWN (no common last_applied within {CONVERGE_TIMEOUT_S:.0f} s): {seen}"


def leader_view(cluster: LocalCluster, leader_id: str) -> str:
    """The leader and its term, e.g. "n2 (term 1)": a change during the run shows here."""
    status = cluster.status(leader_id)
    return f"{leader_id} (term {'?' if status is None else status.term})"


# -- output -------------------------------------------------------------------------------


def ratios(results: Sequence[PhaseResult]) -> list[float | None]:
    """Each phase's ops/s over the reference's at the same concurrency (None without one)."""
    ref = {r.concurrency: r.ops_per_s for r in results if r.op == REF}
    return [r.ops_per_s / ref[r.concurrency] if ref.get(r.concurrency) else None for r in results]


def _json_safe(value: object) -> object:
    """NaN (a phase without a single success) becomes null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _errors_text(result: PhaseResult) -> str:
    parts = [f"{name}={count}" for name, count in result.errors.items()]
    if result.stuck_threads:
        parts.append(f"stuck_threads={result.stuck_threads}")
    return ", ".join(parts) or "0"


def format_table(results: Sequence[PhaseResult]) -> str:
    header = f"{'op':<22} {'conc':>4} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'x ref':>6}  errors"
    rows = [header, "-" * len(header)]
    for result, ratio in zip(results, ratios(results), strict=True):
        label = REF_LABEL if result.op == REF else result.op
        ratio_text = "-" if ratio is None else f"{ratio:.2f}"
        rows.append(
            f"{label:<22} {result.concurrency:>4} {result.ops_per_s:>9.1f} {result.p50_ms:>8.2f} "
            f"{result.p99_ms:>8.2f} {ratio_text:>6}  {_errors_text(result)}"
        )
    return "\n".join(rows)


def format_footer(report: dict[str, object], nodes: Sequence[NodeReport]) -> str:
    lines = ["", "peak RSS (VmHWM):"]
    for node in nodes:
        rss = "gone" if node.peak_rss_mib is None else f"{node.peak_rss_mib:.1f} MiB"
        lines.append(f"  node {node.node_id:<6} {rss:>10}   exit code {node.exit_code}")
    lines.append(f"  bench       {report['bench_peak_rss_mib']:.1f} MiB")
    lines.append("")
    lines.append(f"pool: {report['pool_sessions']} sessions, creation errors: {report['pool_errors'] or 0}")
    lines.append(f"leader: {report['leader_start']} at start, {report['leader_end']} at end")
    lines.append(f"replicas after the run: {report['replicas']}")
    for node in nodes:
        if node.log_counts:
            lines.append(f"node {node.node_id} log: {node.log_counts}")
            lines.extend(f"    {sample}" for sample in node.log_samples)
    machine = report["machine"]
    assert isinstance(machine, dict)
    lines.append(f"machine: nproc {machine['nproc']}, python {machine['python']}, {machine['platform']}")
    lines.append(f"total wall time: {report['wall_time_s']:.1f} s")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive integers separated by commas, got {text!r}")
    return values


def _op_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(values) - set(OPS))
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"ops are {', '.join(OPS)}; got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0, help="timed seconds per phase")
    parser.add_argument("--concurrency", type=_int_list, default=[1, 8, 64], help="threads, e.g. 1,8,64")
    parser.add_argument("--ops", type=_op_list, default=list(OPS), help=f"subset of {','.join(OPS)}")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--durability", choices=("fsync", "none"), help="raft.durability (default: the code's default)"
    )
    args = parser.parse_args(argv)
    if not (math.isfinite(args.duration_s) and args.duration_s > 0):
        parser.error("--duration-s must be positive")
    return args


def bench_cluster(
    cluster: LocalCluster, args: argparse.Namespace
) -> tuple[dict[str, object], list[PhaseResult]]:
    """Everything that needs the running cluster; the caller starts and stops it."""
    leader_id = cluster.wait_for_leader(LEADER_TIMEOUT_S)
    leader_start = leader_view(cluster, leader_id)
    tls = TLSConfig.from_files(cluster.tls_files.ca, cluster.tls_files.cert, cluster.tls_files.key)
    status_channel = cluster.channel(leader_id)
    try:
        with SessionClient(cluster.endpoints, tls=tls) as client:
            workload = Workload(client, pb_grpc.SessionStoreStub(status_channel))
            workload.fill_pool(POOL_SIZE)
            results = run_all(workload, args.ops, args.concurrency, args.duration_s)
    finally:
        status_channel.close()
    report: dict[str, object] = {
        "pool_sessions": workload.pool_size,
        "pool_errors": dict(workload.pool_errors),
        "leader_start": leader_start,
        "leader_end": leader_view(cluster, cluster.wait_for_leader(LEADER_TIMEOUT_S)),
        "replicas": convergence(cluster),
    }
    return report, results


def node_reports(
    cluster: LocalCluster, rss: dict[str, float | None], codes: dict[str, int]
) -> list[NodeReport]:
    reports = []
    for node_id in cluster.node_ids:
        counts, samples = scan_log(cluster.log_path(node_id))
        reports.append(NodeReport(node_id, rss.get(node_id), codes.get(node_id), counts, samples))
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wall_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="sq-bench-"))
    overrides = {"raft": {"durability": args.durability}} if args.durability else None
    cluster = LocalCluster(tmp / "cluster", nodes=NODES, overrides=overrides)
    try:
        cluster.start()
        report, results = bench_cluster(cluster, args)
        # Read before stopping: VmHWM goes with the process.
        rss = {n: (None if (pid := cluster.pid(n)) is None else peak_rss_mib(pid)) for n in cluster.node_ids}
        codes = cluster.stop()
        nodes = node_reports(cluster, rss, codes)
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report.update(
        machine=machine_facts(),
        bench_peak_rss_mib=peak_rss_mib("self"),
        wall_time_s=time.perf_counter() - wall_start,
        duration_s=args.duration_s,
        warmup_s=WARMUP_S,
        value_bytes=VALUE_BYTES,
    )
    sys.stdout.write(format_table(results) + "\n" + format_footer(report, nodes) + "\n")
    if args.json is not None:
        rows = [{**asdict(r), "ratio_to_ref": x} for r, x in zip(results, ratios(results), strict=True)]
        document = {**report, "results": rows, "nodes": [asdict(n) for n in nodes]}
        text = json.dumps(_json_safe(document), indent=2, allow_nan=False, default=str)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

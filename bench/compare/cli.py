"""`python -m bench.compare`: start every system, run the interleaved cells, report, stop.

Environment (read here only): BENCH_REPETITIONS and BENCH_DURATION_S set the defaults of
--repetitions and --duration-s, so `make bench-compare BENCH_REPETITIONS=1` works.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType

from . import report
from .driver import CellPlan, Sample, fill_pool_async, fill_pool_sync, run_async_cell, run_sync_cell
from .sys_sessionquorum import SessionquorumServer, SqAsyncClientTarget, SqClientTarget, SqGrpcTarget
from .tls import borrow_tls
from .workload import MIXES, AsyncTarget, Server, SyncTarget, cell_order

TARGETS = ("sq-grpc", "sq-client", "sq-async", "etcd", "redis")
DEFAULT_REPETITIONS = 3
DEFAULT_DURATION_S = 10.0
DEFAULT_WARMUP_S = 1.0
DEFAULT_POOL = 1_000
RESULTS_DIR = Path("bench/results")
VERSION_TIMEOUT_S = 5.0
# Anchor -> (its server binary, its Python client module, the Debian package with the binary).
# Their modules are imported only when they run, so sessionquorum alone needs no bench extra.
ANCHORS = {"etcd": ("etcd", "aetcd", "etcd-server"), "redis": ("redis-server", "redis", "redis-server")}


def _list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        unknown = sorted(set(values) - set(choices))
        if not values or unknown:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}; got {text!r}")
        return list(dict.fromkeys(values))

    return parse


def _ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive integers separated by commas, got {text!r}")
    return values


def _default_data_root() -> Path | None:
    """tmpfs when there is one: no system then pays for disk writes (see bench/README.md)."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=_list(TARGETS), default=list(TARGETS), help=",".join(TARGETS))
    parser.add_argument("--mixes", type=_list(tuple(MIXES)), default=list(MIXES), help=",".join(MIXES))
    parser.add_argument("--clients", type=_ints, default=[1, 8, 64], help="concurrent clients, e.g. 1,8,64")
    parser.add_argument(
        "--repetitions", type=int, default=int(os.environ.get("BENCH_REPETITIONS", DEFAULT_REPETITIONS))
    )
    parser.add_argument(
        "--duration-s",
        type=float,
        default=float(os.environ.get("BENCH_DURATION_S", DEFAULT_DURATION_S)),
        help="timed seconds per cell",
    )
    parser.add_argument("--warmup-s", type=float, default=DEFAULT_WARMUP_S, help="untimed s before a cell")
    parser.add_argument("--pool", type=int, default=DEFAULT_POOL, help="sessions created per target first")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON and PNG go")
    parser.add_argument("--data-root", type=Path, default=_default_data_root(), help="parent of the temp dir")
    parser.add_argument(
        "--plaintext-anchors", action="store_true", help="etcd and Redis without TLS (sessionquorum keeps it)"
    )
    parser.add_argument(
        "--keep-data", action="store_true", help="keep the servers' directories (and their logs) afterwards"
    )
    parser.add_argument(
        "--sq-reads",
        choices=("leader", "any"),
        default=os.environ.get("BENCH_SQ_READS", "leader"),
        help="where sessionquorum's linearizable reads go: the leader, or each node in turn",
    )
    parser.add_argument(
        "--sq-atrest",
        choices=("on", "off"),
        default="on",
        help="sessionquorum encryption at rest (sealed values, keyed hashes); off measures its cost",
    )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave out etcd / Redis when their binary or client is missing, instead of failing",
    )
    args = parser.parse_args(argv)
    for name in ("duration_s", "warmup_s"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= (0 if name == "warmup_s" else 0.01)):
            parser.error(f"--{name.replace('_', '-')} must be a positive number of seconds")
    if args.repetitions < 1 or args.pool < 1:
        parser.error("--repetitions and --pool must be at least 1")
    return args


def _missing_binaries(targets: Sequence[str]) -> dict[str, str]:
    missing = {}
    for name, (binary, module, package) in ANCHORS.items():
        if name not in targets:
            continue
        if shutil.which(binary) is None:
            missing[name] = f"no {binary} binary on PATH (apt-get install {package})"
        elif importlib.util.find_spec(module) is None:
            missing[name] = f"no Python module {module} (pip install -e '.[bench]')"
    return missing


def _version(argv: Sequence[str]) -> str:
    """The first line a binary prints for --version (for the JSON: figures depend on it)."""
    try:
        out = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=VERSION_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def _versions(servers: Mapping[str, object]) -> dict[str, str]:
    versions = {}
    for name, (binary, _, _) in ANCHORS.items():
        if name in servers:
            versions[name] = _version([shutil.which(binary) or binary, "--version"])
    return versions


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class _Run:
    """The servers and targets of one invocation; `stop()` ends every process it started."""

    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.sq = SessionquorumServer(root, atrest=self.args.sq_atrest == "on")
        self.root = root
        self.servers: dict[str, Server] = {}
        self.async_targets: dict[str, AsyncTarget] = {}
        self.sync_targets: dict[str, SyncTarget] = {}
        self.exit_codes: dict[str, dict[str, int]] = {}

    def start(self) -> None:
        targets = self.args.targets
        # The cluster directory holds the CA and certificates the anchors borrow.
        self.sq.prepare()
        tls = None if self.args.plaintext_anchors else borrow_tls(self.sq.cluster)
        if {"sq-grpc", "sq-client", "sq-async"} & set(targets):
            _say("starting sessionquorum (3 nodes)")
            self.servers[self.sq.name] = self.sq
            self.sq.start()
            if "sq-grpc" in targets:
                self.async_targets["sq-grpc"] = SqGrpcTarget(self.sq, self.args.sq_reads)
            if "sq-client" in targets:
                self.sync_targets["sq-client"] = SqClientTarget(self.sq, self.args.sq_reads)
            if "sq-async" in targets:
                self.async_targets["sq-async"] = SqAsyncClientTarget(self.sq, self.args.sq_reads)
        if "etcd" in targets:
            from .sys_etcd import EtcdServer, EtcdTarget

            _say("starting etcd (3 members)")
            etcd = EtcdServer(self.root, tls)
            self.servers[etcd.name] = etcd
            etcd.start()
            self.async_targets["etcd"] = EtcdTarget(etcd)
        if "redis" in targets:
            from .sys_redis import RedisServer, RedisTarget

            _say("starting redis")
            redis_server = RedisServer(self.root, tls)
            self.servers[redis_server.name] = redis_server
            redis_server.start()
            self.async_targets["redis"] = RedisTarget(redis_server, connections=max(self.args.clients))

    def leaders(self) -> dict[str, str]:
        return {name: server.leader_view() for name, server in self.servers.items()}

    def pids(self, target: str) -> list[int]:
        server = (self.async_targets.get(target) or self.sync_targets[target]).server
        return list(self.servers[server].pids().values())

    def stop(self) -> None:
        for name, server in reversed(list(self.servers.items())):
            # One server failing to stop must not leave the others running.
            try:
                codes = server.stop()
            except Exception as exc:
                _say(f"stopping {name} failed: {exc!r}")
                continue
            if codes:
                self.exit_codes[name] = codes


async def _measure(run: _Run) -> tuple[list[Sample], dict[str, object]]:
    args = run.args
    for target in run.async_targets.values():
        await target.open()
    for sync_target in run.sync_targets.values():
        sync_target.open()
    try:
        keys: dict[str, list[bytes]] = {}
        pool_errors: dict[str, dict[str, int]] = {}
        for seed, name in enumerate(args.targets):
            _say(f"warm-up: creating {args.pool} sessions through {name}")
            if name in run.async_targets:
                pool = await fill_pool_async(run.async_targets[name], args.pool, seed)
            else:
                pool = await asyncio.to_thread(fill_pool_sync, run.sync_targets[name], args.pool, seed)
            keys[name], pool_errors[name] = pool
            if not keys[name]:
                raise RuntimeError(f"{name}: could not create any warm-up session: {pool_errors[name]}")
        leaders_start = run.leaders()
        cells = cell_order(args.targets, args.mixes, args.clients, args.repetitions)
        samples = []
        for i, cell in enumerate(cells):
            plan = CellPlan(
                mix=MIXES[cell.mix],
                clients=cell.clients,
                repetition=cell.repetition,
                duration_s=args.duration_s,
                warmup_s=args.warmup_s,
                keys=keys[cell.target],
                server_pids=run.pids(cell.target),
                seed=i,
            )
            if cell.target in run.async_targets:
                sample = await run_async_cell(run.async_targets[cell.target], plan)
            else:
                sample = await asyncio.to_thread(run_sync_cell, run.sync_targets[cell.target], plan)
            samples.append(sample)
            errors = sum(sample.errors.values())
            _say(
                f"[{i + 1}/{len(cells)}] rep {cell.repetition + 1} {cell.mix} x{cell.clients} {cell.target}: "
                f"{sample.ops_per_s:.0f} ops/s, p50 {sample.p50_ms:.2f} ms, p99 {sample.p99_ms:.2f} ms"
                + (f", {errors} errors {sample.errors}" if errors else "")
            )
        facts: dict[str, object] = {
            "pool_sessions": {name: len(k) for name, k in keys.items()},
            "pool_errors": pool_errors,
            "leaders_start": leaders_start,
            "leaders_end": run.leaders(),
            "sessionquorum_replicas": run.sq.replicas() if run.sq.name in run.servers else None,
        }
        return samples, facts
    finally:
        for target in run.async_targets.values():
            await target.close()
        for sync_target in run.sync_targets.values():
            sync_target.close()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwinds like Ctrl-C, through the `finally` that stops every server we started.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = _missing_binaries(args.targets)
    if missing and not args.skip_missing:
        _say("missing: " + "; ".join(missing.values()) + " (run make bench-compare, or pass --skip-missing)")
        return 2
    for name, reason in missing.items():
        _say(f"skipping {name}: {reason}")
    args.targets = [t for t in args.targets if t not in missing]
    if not args.targets:
        _say("nothing left to run")
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    started_at = dt.datetime.now(dt.UTC)
    wall_start = time.perf_counter()
    load_start = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="sq-bench-compare-", dir=args.data_root))
    run = _Run(args, root)
    try:
        run.start()
        samples, facts = asyncio.run(_measure(run))
    except KeyboardInterrupt:
        samples = []
    finally:
        run.stop()
        if args.keep_data:
            _say(f"kept the servers' directories and logs in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if not samples:
        _say(f"interrupted; stopped every server this run started: {run.exit_codes}")
        return 130
    rows = report.medians(samples)
    pairs = report.ratios(rows)
    run_facts: dict[str, object] = {
        "started_utc": started_at.isoformat(timespec="seconds"),
        "wall_time_s": time.perf_counter() - wall_start,
        "settings": {
            "targets": args.targets,
            "mixes": args.mixes,
            "clients": args.clients,
            "repetitions": args.repetitions,
            "duration_s": args.duration_s,
            "warmup_s": args.warmup_s,
            "pool": args.pool,
            "anchors_tls": not args.plaintext_anchors,
            "data_root": str(args.data_root or tempfile.gettempdir()),
            "skipped": missing,
        },
        "machine": {
            "nproc": len(os.sched_getaffinity(0)),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "versions": _versions(run.servers),
        "server_exit_codes": run.exit_codes,
        **facts,
    }
    title = f"median of {args.repetitions} x {args.duration_s:g} s per cell, {os.cpu_count()} cores"
    sys.stdout.write(f"\n{title}; CPU in seconds per cell\n" + report.format_tables(rows, pairs) + "\n")
    sys.stdout.write(
        f"\nleaders at start {facts['leaders_start']}, at end {facts['leaders_end']}\n"
        f"sessionquorum replicas after the run: {facts['sessionquorum_replicas']}\n"
        f"server exit codes (0 = clean stop): {run.exit_codes}\n"
        f"load average at start {load_start}, at end {os.getloadavg()}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"compare-{started_at:%Y%m%d-%H%M%S}"
    report.write_json(stem.with_suffix(".json"), run_facts, samples, rows, pairs)
    report.write_chart(stem.with_suffix(".png"), rows, title)
    sys.stdout.write(f"wrote {stem}.json and {stem}.png\n")
    return 0

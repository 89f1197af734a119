"""Profile sessionquorum's nodes under the comparison workload: where the CPU goes, per node.

    python -m bench.profile_nodes [--mix mixed] [--clients 64] [--duration-s 10] [--reads any]
                                  [--target sq-grpc|sq-client] [--raft '{"pack_commands": 1}']
                                  [--atrest on|off] [--out FILE]

Starts a 3-node cluster (tmpfs when there is one), fills a session pool THROUGH THE TARGET
it profiles (the public client's keys are tokens, sq-grpc's are raw token hashes: a pool
made by one is useless to the other), drives one cell of `bench.compare`'s workload and,
meanwhile, samples every node with py-spy (installed into the venv when missing; sampling
needs ptrace, so run it as root or with CAP_SYS_PTRACE). Prints, per node, the functions
holding the most samples, inclusive ("total", with callees) and exclusive ("self"), as a
share of the node's samples, plus the cell's ops/s and its errors. `--out` also writes that
text to a file. Everything it starts it stops by PID; traffic stays on 127.0.0.1.

A profile of a cell that failed is worse than none: the tool exits 2, naming the errors,
when the pool could not be filled, when the cell completed no call, or when more than
`--max-error-share` of its calls failed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sessionquorum.cluster import LocalCluster

from .compare.driver import CellPlan, Sample, fill_pool_async, fill_pool_sync, run_async_cell, run_sync_cell
from .compare.sys_sessionquorum import SessionquorumServer, SqClientTarget, SqGrpcTarget
from .compare.workload import MIXES

TOP = 30


class ProfileFailed(Exception):
    """The workload did not run as asked: a profile of it would measure error paths."""


def check_pool(keys: list[bytes], errors: dict[str, int], wanted: int) -> None:
    """Refuse a pool with no keys; say so when part of it failed."""
    if not keys:
        raise ProfileFailed(f"could not create any warm-up session ({wanted} tried): errors {errors}")
    if errors:
        print(f"warning: {sum(errors.values())} of {wanted} pool sessions failed: {errors}", file=sys.stderr)


def check_sample(sample: Sample, max_error_share: float) -> None:
    """Refuse a cell that completed nothing, or whose calls failed more than allowed."""
    failed = sum(sample.errors.values())
    if sample.ops == 0:
        raise ProfileFailed(f"the cell completed no call: errors {sample.errors or 'none'}")
    if failed > max_error_share * (failed + sample.ops):
        raise ProfileFailed(f"{failed} of {failed + sample.ops} calls failed: {sample.errors}")


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=True)
    return found


# Frames where a thread waits for work (py-spy's idle detection misses them without --native):
# a sample ending in one of them is idle time, not CPU.
IDLE_LEAVES = frozenset(
    {
        "EpollSelector.select (selectors.py)",
        "PollPoller.poll (poller.py)",
        "_PollLikeSelector.select (selectors.py)",
    }
)


def _frame(raw: str) -> str:
    if " (" not in raw:
        return raw
    name, _, where = raw.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})"


def _summarize(collapsed: Path) -> tuple[int, int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, busy samples, top inclusive, top exclusive) from py-spy's collapsed ("raw") output.

    The tops count busy samples only (a sample whose innermost frame is not an idle wait), so
    their shares are shares of the CPU the node spent, comparable across runs of unequal load.
    """
    total = 0
    busy = 0
    inclusive: collections.Counter[str] = collections.Counter()
    exclusive: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        if frames[-1] in IDLE_LEAVES:
            continue
        busy += count
        for frame in set(frames):
            inclusive[frame] += count
        exclusive[frames[-1]] += count
    return total, busy, inclusive.most_common(TOP), exclusive.most_common(TOP)


async def _run(args: argparse.Namespace, root: Path) -> list[str]:
    server = SessionquorumServer(root, atrest=args.atrest == "on")
    if args.raft:
        overrides: dict[str, dict[str, object]] = {"raft": json.loads(args.raft)}
        if args.atrest == "off":
            overrides["atrest"] = {"enabled": False}
        server.cluster = LocalCluster(root / "sessionquorum", nodes=3, overrides=overrides)
    server.prepare()
    server.start()
    target = SqGrpcTarget(server, args.reads)
    client = SqClientTarget(server, args.reads) if args.target == "sq-client" else None
    spies: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
    lines: list[str] = []
    try:
        await target.open()
        if client is not None:
            client.open()
            keys, pool_errors = await asyncio.to_thread(fill_pool_sync, client, args.pool, 1)
        else:
            keys, pool_errors = await fill_pool_async(target, args.pool, seed=1)
        check_pool(keys, pool_errors, args.pool)
        plan = CellPlan(
            MIXES[args.mix],
            args.clients,
            0,
            args.duration_s,
            1.0,
            keys,
            seed=7,
            server_pids=list(server.pids().values()),
        )
        spy = _py_spy()
        for node, pid in server.pids().items():
            out = root / f"{node}.txt"
            cmd = [
                spy,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--duration",
                str(int(args.duration_s + 1)),
                "--nonblocking",
                "--output",
                str(out),
            ]
            spies.append(
                (node, out, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            )
        if client is not None:
            sample = await asyncio.to_thread(run_sync_cell, client, plan)
        else:
            sample = await run_async_cell(target, plan)
        spy_errors = {}
        for node, _, proc in spies:
            _, err = proc.communicate(timeout=60)
            if proc.returncode != 0:
                spy_errors[node] = err.decode(errors="replace").strip()[-300:]
        lines.append(
            f"{args.target} {args.mix}@{args.clients} reads={args.reads} atrest={args.atrest}: "
            f"{sample.ops_per_s:.0f} ops/s, p50 {sample.p50_ms:.2f} ms, p99 {sample.p99_ms:.2f} ms, "
            f"server CPU {sample.server_cpu_s:.2f} s in {sample.elapsed_s:.1f} s, "
            f"errors {sample.errors or 'none'}, pool {len(keys)} (errors {pool_errors or 'none'})"
        )
        print(lines[-1])
        check_sample(sample, args.max_error_share)
        leader = server.leader_id
        for node, out, _ in spies:
            if not out.exists():
                lines.append(f"{node}: no profile (py-spy: {spy_errors.get(node, 'no output')})")
                continue
            if args.out is not None:  # the raw stacks too, for a closer look (grep, flame graphs)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(out, args.out.with_name(f"{args.out.stem}.{node}.collapsed"))
            samples, busy, inc, exc = _summarize(out)
            lines.append(
                f"\n== {node}{' (leader)' if node == leader else ''}: {samples} samples, {busy} busy "
                f"(shares below are of the busy ones)"
            )
            lines.append("  total%  function (with callees)")
            lines.extend(f"  {100 * n / max(1, busy):5.1f}  {name}" for name, n in inc)
            lines.append("  self%   function (own time)")
            lines.extend(f"  {100 * n / max(1, busy):5.1f}  {name}" for name, n in exc)
        print("\n".join(lines[1:]))
    finally:
        if client is not None:
            client.close()
        await target.close()
        server.stop()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_nodes", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--mix", choices=sorted(MIXES), default="mixed")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--reads", choices=("leader", "any"), default="leader")
    parser.add_argument("--target", choices=("sq-grpc", "sq-client"), default="sq-grpc")
    parser.add_argument("--raft", default="", help="raft overrides, JSON, e.g. '{\"pack_commands\": 1}'")
    parser.add_argument("--atrest", choices=("on", "off"), default="on", help="encryption at rest")
    parser.add_argument("--max-error-share", type=float, default=0.01, help="fail above this share of errors")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="sq-profile-", dir=shm if shm.is_dir() else None) as tmp:
        try:
            lines = asyncio.run(_run(args, Path(tmp)))
        except ProfileFailed as exc:
            print(f"profile_nodes: FAILED: {exc}", file=sys.stderr)
            return 2
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Profile sessionquorum's nodes under the comparison workload: where the CPU goes, per node.

    python -m bench.profile_nodes [--mix mixed] [--clients 64] [--duration-s 10] [--reads any]
                                  [--target sq-grpc|sq-client] [--raft '{"pack_commands": 1}']

Starts a 3-node cluster (tmpfs when there is one), fills a session pool, drives one cell
of `bench.compare`'s workload through raw gRPC stubs (`sq-grpc`) and, meanwhile, samples
every node with py-spy (installed into the venv when missing; sampling needs ptrace, so
run it as root or with CAP_SYS_PTRACE). Prints, per node, the functions holding the most
samples, inclusive ("total", with callees) and exclusive ("self"), as a share of the
node's samples, plus the cell's ops/s. Everything it starts it stops by PID; traffic stays
on 127.0.0.1.
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

from .compare.driver import CellPlan, fill_pool_async, run_async_cell, run_sync_cell
from .compare.sys_sessionquorum import SessionquorumServer, SqClientTarget, SqGrpcTarget
from .compare.workload import MIXES

TOP = 18


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=True)
    return found


def _summarize(collapsed: Path) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top inclusive, top exclusive) from py-spy's collapsed ("raw") output."""
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    exclusive: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
            if " (" in f
            else f
            for f in stack.split(";")
        ]
        for frame in set(frames):
            inclusive[frame] += count
        exclusive[frames[-1]] += count
    return total, inclusive.most_common(TOP), exclusive.most_common(TOP)


async def _run(args: argparse.Namespace, root: Path) -> None:
    server = SessionquorumServer(root)
    if args.raft:
        server.cluster = LocalCluster(
            root / "sessionquorum", nodes=3, overrides={"raft": json.loads(args.raft)}
        )
    server.prepare()
    server.start()
    target = SqGrpcTarget(server, args.reads)
    spies: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
    try:
        await target.open()
        keys, _ = await fill_pool_async(target, args.pool, seed=1)
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
                (node, out, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            )
        if args.target == "sq-client":
            client = SqClientTarget(server, args.reads)
            client.open()
            try:
                sample = await asyncio.to_thread(run_sync_cell, client, plan)
            finally:
                client.close()
        else:
            sample = await run_async_cell(target, plan)
        for _, _, proc in spies:
            proc.wait(timeout=60)
        print(
            f"{args.target} {args.mix}@{args.clients} reads={args.reads}: {sample.ops_per_s:.0f} ops/s, "
            f"p50 {sample.p50_ms:.2f} ms, server CPU {sample.server_cpu_s:.2f} s in {sample.elapsed_s:.1f} s"
        )
        leader = server.leader_id
        for node, out, _ in spies:
            if not out.exists():
                print(f"{node}: no profile (py-spy needs ptrace)")
                continue
            samples, inc, exc = _summarize(out)
            print(f"\n== {node}{' (leader)' if node == leader else ''}: {samples} samples")
            print("  total%  function (with callees)")
            for name, n in inc:
                print(f"  {100 * n / samples:5.1f}  {name}")
            print("  self%   function (own time)")
            for name, n in exc:
                print(f"  {100 * n / samples:5.1f}  {name}")
    finally:
        await target.close()
        server.stop()


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
    args = parser.parse_args(argv)
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="sq-profile-", dir=shm if shm.is_dir() else None) as tmp:
        asyncio.run(_run(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A/B two Raft settings of sessionquorum on the same write workload, interleaved.

    python -m bench.ab_raft --b '{"pack_commands": 1}' --clients 8,64 --rounds 2

Each round starts a fresh 3-node cluster with setting A (default: the release's settings),
runs one cell per (target, clients), stops it, then does the same with B. Interleaving
rounds spreads a shared machine's load over both. Reported per cell: ops/s, p50, and the
servers' CPU milliseconds per operation, which a busy neighbour disturbs less than ops/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sessionquorum.cluster import LocalCluster

from .compare.driver import CellPlan, Sample, fill_pool_async, fill_pool_sync, run_async_cell, run_sync_cell
from .compare.sys_sessionquorum import SessionquorumServer, SqClientTarget, SqGrpcTarget
from .compare.workload import MIXES

POOL = 300


def _server(root: Path, raft: Mapping[str, Any]) -> SessionquorumServer:
    server = SessionquorumServer(root)
    server.cluster = LocalCluster(root / "sessionquorum", nodes=3, overrides={"raft": dict(raft)})
    return server


def _round(
    label: str, raft: Mapping[str, Any], args: argparse.Namespace, seed: int
) -> list[tuple[str, Sample]]:
    out: list[tuple[str, Sample]] = []
    with tempfile.TemporaryDirectory(prefix="ab-raft-") as tmp:
        server = _server(Path(tmp), raft)
        server.prepare()
        server.start()
        try:
            pids = list(server.pids().values())
            for target_name in args.targets:
                for clients in args.clients:
                    plan_args = dict(
                        mix=MIXES[args.mix], clients=clients, repetition=seed, duration_s=args.duration_s,
                        warmup_s=1.0, server_pids=pids, seed=seed,
                    )  # fmt: skip
                    if target_name == "sq-client":
                        client = SqClientTarget(server)
                        client.open()
                        try:
                            keys, _ = fill_pool_sync(client, POOL, seed)
                            sample = run_sync_cell(client, CellPlan(keys=keys, **plan_args))  # type: ignore[arg-type]
                        finally:
                            client.close()
                    else:

                        async def grpc_cell(plan_args: dict[str, Any] = plan_args) -> Sample:
                            target = SqGrpcTarget(server)
                            await target.open()
                            try:
                                keys, _ = await fill_pool_async(target, POOL, seed)
                                return await run_async_cell(target, CellPlan(keys=keys, **plan_args))  # type: ignore[arg-type]
                            finally:
                                await target.close()

                        sample = asyncio.run(grpc_cell())
                    out.append((label, sample))
                    print(f"{label} {sample.target} x{clients}: {_line(sample)}", flush=True)
            statuses = server.cluster.statuses()
            print(f"{label} replicas: {server.replicas()}")
            for node, s in statuses.items():
                if s is not None:
                    print(
                        f"  {node}: last_applied {s.last_applied}, packed applied {s.packed_entries_applied}"
                    )
        finally:
            server.stop()
    return out


def _line(s: Sample) -> str:
    per_op = 1000 * s.server_cpu_s / max(1, s.ops)
    return f"{s.ops_per_s:7.0f} ops/s  p50 {s.p50_ms:6.2f} ms  srv cpu {per_op:.3f} ms/op  errors {s.errors}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--a", default="{}", help="raft overrides for A (JSON)")
    parser.add_argument("--b", default='{"pack_commands": 1}', help="raft overrides for B (JSON)")
    parser.add_argument("--targets", default="sq-client,sq-grpc")
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--mix", default="write", choices=sorted(MIXES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=5.0)
    args = parser.parse_args()
    args.targets = args.targets.split(",")
    args.clients = [int(c) for c in args.clients.split(",")]
    settings = {"A": json.loads(args.a), "B": json.loads(args.b)}
    results: list[tuple[str, Sample]] = []
    for r in range(args.rounds):
        for label, raft in settings.items():
            results.extend(_round(label, raft, args, seed=r + 1))
    print(f"\nmedian over {args.rounds} rounds; A = {settings['A']}, B = {settings['B']}")
    for target in args.targets:
        for clients in args.clients:
            row = []
            for label in settings:
                cell = [
                    s for lab, s in results if lab == label and s.target == target and s.clients == clients
                ]
                ops = statistics.median(s.ops_per_s for s in cell)
                p50 = statistics.median(s.p50_ms for s in cell)
                cpu = statistics.median(1000 * s.server_cpu_s / max(1, s.ops) for s in cell)
                row.append(f"{label}: {ops:6.0f} ops/s p50 {p50:6.2f} ms cpu {cpu:.3f} ms/op")
            print(f"{target:9s} x{clients:<3d} " + " | ".join(row))


if __name__ == "__main__":
    main()

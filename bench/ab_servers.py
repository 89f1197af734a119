"""A/B two trees' SERVERS side by side: both clusters up at once, cells alternated A, B, A, B.

    python -m bench.ab_servers --tree old=/work/wt-perf-old --tree new=/work/wt-perf \\
        [--mixes mixed,read] [--clients 1,64] [--repetitions 5] [--duration-s 5]

Each tree starts its own 3-node cluster with its own code (`TREE/.venv/bin/python`, its
own LocalCluster, in a helper process that stops it by PID when told, or when this process
goes away); this process drives both through ONE client library (this tree's public
`SessionClient`, from a thread pool, as `bench.compare`'s sq-client does), so only the
server side differs. For every (mix, clients) the two clusters run back to back, the order
swapped each repetition, and each pair gives a ratio B/A: neighbours' load, which moves on a
scale of seconds to minutes on a shared machine, hits both cells of a pair alike, where
runs minutes apart (bench.ab_trees) do not. Prints every cell, then per cell the medians
and the median of the paired ratios, and the busiest server process's CPU per call.
`--overrides NAME=JSON` starts that tree's cluster with LocalCluster overrides (a setting's cost).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sessionquorum.client import SessionClient, TLSConfig

from .compare.driver import CellPlan, Sample, fill_pool_sync, run_sync_cell
from .compare.workload import MIXES, OP_TIMEOUT_S, SESSION_LIFETIME_S, SESSION_TTL_S

ATTRIBUTE = "data"
POOL = 1000
START_TIMEOUT_S = 120

# Run with the tree's own Python: start a cluster, say where it is, stop it when stdin closes.
_HELPER = """
import json, sys
from pathlib import Path
from sessionquorum.cluster import LocalCluster
cluster = LocalCluster(Path(sys.argv[1]), 3, overrides=json.loads(sys.argv[2]) or None)
cluster.prepare()
cluster.start()
try:
    leader = cluster.wait_for_leader(60)
    tls = cluster.tls_files
    print(json.dumps({
        "endpoints": list(cluster.endpoints),
        "tls": [str(tls.ca), str(tls.cert), str(tls.key)],
        "pids": [cluster.pid(n) for n in cluster.node_ids],
        "leader": leader,
    }), flush=True)
    sys.stdin.read()
finally:
    cluster.stop()
"""


@dataclass
class _Cluster:
    name: str
    helper: subprocess.Popen[str]
    endpoints: list[str]
    tls: list[str]
    pids: list[int]


class _Target:
    """The public client against one cluster (the workload's sync target shape)."""

    server = "sessionquorum"

    def __init__(self, cluster: _Cluster) -> None:
        self.name = cluster.name
        self._client = SessionClient(cluster.endpoints, tls=TLSConfig.from_files(*map(Path, cluster.tls)))

    def open(self) -> None:
        pass  # the client connects on first use

    def close(self) -> None:
        self._client.close()

    def create(self, value: bytes) -> bytes:
        created = self._client.create(
            attributes={ATTRIBUTE: value},
            idle_timeout_s=SESSION_TTL_S,
            absolute_timeout_s=SESSION_LIFETIME_S,
            timeout_s=OP_TIMEOUT_S,
        )
        return created.token.encode()

    def validate(self, key: bytes) -> None:
        self._client.validate(key.decode(), timeout_s=OP_TIMEOUT_S)

    def update(self, key: bytes, value: bytes) -> None:
        self._client.update(key.decode(), set={ATTRIBUTE: value}, timeout_s=OP_TIMEOUT_S)


def _start(name: str, tree: Path, root: Path, overrides: str) -> _Cluster:
    helper = subprocess.Popen(
        [str(tree / ".venv/bin/python"), "-c", _HELPER, str(root / name), overrides],
        cwd=tree,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert helper.stdout is not None
    line = helper.stdout.readline()
    if not line:
        helper.kill()
        raise SystemExit(f"{name}: the cluster of {tree} did not start")
    info = json.loads(line)
    return _Cluster(name, helper, info["endpoints"], info["tls"], info["pids"])


def _stop(cluster: _Cluster) -> None:
    if cluster.helper.stdin is not None:
        cluster.helper.stdin.close()
    try:
        cluster.helper.wait(timeout=60)
    except subprocess.TimeoutExpired:
        cluster.helper.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab_servers", description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH, twice")
    parser.add_argument(
        "--overrides",
        action="append",
        default=[],
        help='NAME=JSON: LocalCluster overrides for that tree, e.g. new=\'{"atrest": {"enabled": false}}\'',
    )
    parser.add_argument("--mixes", default="mixed,read")
    parser.add_argument("--clients", default="1,64")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--duration-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    trees = [(n, Path(p)) for n, _, p in (t.partition("=") for t in args.tree)]
    if len(trees) != 2:
        parser.error("give --tree twice: A and B")
    cells = [(mix, int(n)) for mix in args.mixes.split(",") for n in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="sq-ab-servers-", dir="/dev/shm") as tmp:
        clusters = []
        try:
            overrides = dict(o.partition("=")[::2] for o in args.overrides)
            for name, tree in trees:
                clusters.append(_start(name, tree, Path(tmp), overrides.get(name, "{}")))
            targets = [_Target(c) for c in clusters]
            keys = {}
            for target in targets:
                keys[target.name], errors = fill_pool_sync(target, POOL, seed=1)
                if not keys[target.name]:
                    raise SystemExit(f"{target.name}: no warm-up session: {errors}")
            samples: dict[tuple[str, int, str], list[Sample]] = {}
            for rep in range(args.repetitions):
                for mix, clients in cells:
                    pair = targets if rep % 2 == 0 else targets[::-1]
                    for target, cluster in zip(
                        pair, clusters if rep % 2 == 0 else clusters[::-1], strict=True
                    ):
                        plan = CellPlan(
                            MIXES[mix],
                            clients,
                            rep,
                            args.duration_s,
                            1.0,
                            keys[target.name],
                            server_pids=cluster.pids,
                            seed=secrets.randbelow(1000),
                        )
                        sample = run_sync_cell(target, plan)
                        samples.setdefault((mix, clients, target.name), []).append(sample)
                        print(
                            f"rep {rep + 1} {mix}@{clients} {target.name:>6}: {sample.ops_per_s:7.0f} ops/s "
                            f"p50 {sample.p50_ms:6.2f} ms  busiest server "
                            f"{1e6 * sample.server_cpu_max_s / max(1, sample.ops):5.0f} us/op"
                            + (f"  errors {sample.errors}" if sample.errors else ""),
                            flush=True,
                        )
            a, b = (t.name for t in targets)
            print(
                f"\nper cell: medians of {args.repetitions} pairs; ratio = median of the paired {b}/{a} ops/s"
            )
            for mix, clients in cells:
                sa, sb = samples[(mix, clients, a)], samples[(mix, clients, b)]
                ratio = statistics.median(
                    y.ops_per_s / max(1e-9, x.ops_per_s) for x, y in zip(sa, sb, strict=True)
                )
                p50r = statistics.median(y.p50_ms / x.p50_ms for x, y in zip(sa, sb, strict=True))

                def med(ss: list[Sample]) -> str:
                    ops = statistics.median(s.ops_per_s for s in ss)
                    p50 = statistics.median(s.p50_ms for s in ss)
                    cpu = statistics.median(1e6 * s.server_cpu_max_s / max(1, s.ops) for s in ss)
                    return f"{ops:6.0f} ops/s p50 {p50:5.2f} ms cpu {cpu:4.0f} us/op"

                print(
                    f"{mix}@{clients:<3} {a}: {med(sa)} | {b}: {med(sb)} | "
                    f"{b}/{a} ops {ratio:.2f}x, p50 {p50r:.2f}x"
                )
            for target in targets:
                target.close()
        finally:
            for cluster in clusters:
                _stop(cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Raft path alone, A/B: packed entries on and off, without gRPC, TLS clients or other processes.

    python -m bench.raft_path [--commands 3000] [--rounds 2] [--concurrency 1,8,64]

Three `ReplicatedLog`s (leader and two followers, real pysyncobj over 127.0.0.1 with the
peer encryption) run in this one process on tmpfs, durability "none"; `concurrency`
proposers on one event loop propose 300-byte creates on the leader. Reported: commands/s,
and CPU microseconds of the whole process (all three nodes and the proposers) per command,
which a shared machine disturbs much less than throughput. On 2 shared cores (2026-12-03,
load average 4-9, four pairs) packing took 364-467 -> 331-373 us/command at 8 proposers
(packs of 8) and 203-218 -> 142-181 at 64 (~55 commands per entry).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from sessionquorum.cluster import LocalCluster
from sessionquorum.store import commands as c
from sessionquorum.store.config import Limits, load_node_config
from sessionquorum.store.raft import ReplicatedLog
from sessionquorum.store.state import SessionMachine

VALUE = b"x" * 300
# pysyncobj stops its tick thread asynchronously; its last journal write must land before
# the directory goes (bounded: the thread polls every few milliseconds).
STOP_GRACE_S = 1.0


def _create(i: int) -> bytes:
    op = c.Create(i.to_bytes(32, "big"), f"h{i}", None, (("data", VALUE),), 600_000, 3_600_000)
    return c.encode(
        c.Command(op, now_ms=1000 + i, client_id=i.to_bytes(8, "big"), sequence=1, client_epoch_ms=1)
    )


def run(pack: bool, commands: int, concurrency: int) -> str:
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None, ignore_cleanup_errors=True) as tmp:
        raft = {"pack_commands": 128 if pack else 1, "durability": "none"}
        cluster = LocalCluster(Path(tmp) / "c", 3, overrides={"raft": raft})
        cluster.prepare()
        machines = [SessionMachine(Limits()) for _ in cluster.node_ids]
        logs = [
            ReplicatedLog(load_node_config(cluster.config_path, n, cluster.node_dir(n)), m)
            for n, m in zip(cluster.node_ids, machines, strict=True)
        ]

        async def main() -> str:
            deadline = time.monotonic() + 30
            while not any(log.is_leader() for log in logs) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            leader = next(log for log in logs if log.is_leader())
            for n in cluster.node_ids:  # the gate: every member advertises its level
                await leader.propose(c.encode(c.Command(c.MemberLevel(n, c.SUPPORTED_LEVEL), now_ms=1)), 10)
            gate = asyncio.Semaphore(concurrency)

            async def one(i: int) -> None:
                async with gate:
                    reply = await leader.propose(_create(i), 30)
                    assert reply.ok, reply

            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one(i) for i in range(commands)))
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            status = leader.status()
            while min(m.now_ms for m in machines) < 1000 + commands - 1 and time.monotonic() < deadline + 60:
                await asyncio.sleep(0.01)
            same = len({m.digest() for m in machines}) == 1
            return (
                f"pack={pack!s:5} proposers={concurrency:3d}: {commands / wall:6.0f} commands/s, "
                f"CPU {1e6 * cpu / commands:6.1f} us/command, {status.last_applied} entries "
                f"({status.packed_proposed} packed), replicas identical: {same}"
            )

        try:
            return asyncio.run(main())
        finally:
            for log in logs:
                log.close()
            time.sleep(STOP_GRACE_S)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", default="1,8,64")
    args = parser.parse_args()
    for _ in range(args.rounds):
        for concurrency in (int(x) for x in args.concurrency.split(",")):
            for pack in (True, False):
                print(run(pack, args.commands, concurrency), flush=True)


if __name__ == "__main__":
    main()

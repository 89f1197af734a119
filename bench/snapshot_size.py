"""Backup and restore at scale: file size, save time, restore time, memory of each side.

    .venv/bin/python bench/snapshot_size.py [--sessions 1000000] [--value-bytes 300]

The state is built in-process by applying real Create commands (loading 1 M sessions
through a cluster's gRPC API takes far longer than the backup itself on a shared 2-core
machine): every other session has a principal, one client id in 20 leaves an exactly-once
entry. Then, as on a real node and a real operator's machine:
- save: a forked child process serves `SnapshotSave` (store/backup_stream.py, the node's
  code, with the state captured on its side) over gRPC on 127.0.0.1, and this process
  receives it with the CLI's code (`cluster/_cli_snapshot._receive`) into a file, then
  verifies the file (`snapshot info`'s check);
- restore: `sessionquorum snapshot restore FILE --out DIR` (the CLI's `main`, 3 nodes:
  verify, decode, fresh CA and certificates, seed n1, copy to n2 and n3);
- load: what a restored node does at its first start (read, verify and restore the snapshot).
Memory: the serving child's and this process's peak RSS growth during the save.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc

from sessionquorum.cluster._cli import main as cli_main
from sessionquorum.cluster._cli_snapshot import _receive
from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc
from sessionquorum.store.backup import read_info
from sessionquorum.store.backup_stream import SnapshotSaves
from sessionquorum.store.commands import Command, Create, encode
from sessionquorum.store.config import Limits
from sessionquorum.store.snapshot_format import Capture
from sessionquorum.store.snapshots import read_snapshot
from sessionquorum.store.state import SessionMachine

DAY_MS = 24 * 3600 * 1000
NOW_MS = 1_700_000_000_000


def rss_bytes(pid: str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes(pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS


def build(sessions: int, value_bytes: int) -> SessionMachine:
    machine = SessionMachine(Limits(max_sessions=max(sessions, 1), max_sessions_per_principal=100))
    value = b"v" * value_bytes
    for i in range(sessions):
        token_hash = hashlib.sha256(i.to_bytes(8, "little")).digest()
        principal = f"user{i // 2}" if i % 2 else None
        op = Create(token_hash, f"h{i:012d}", principal, (("data", value),), DAY_MS, 30 * DAY_MS)
        client = (b"client-%d" % i, i + 1) if i % 20 == 0 else (None, 0)
        machine.apply(encode(Command(op, now_ms=NOW_MS + i // 1000, client_id=client[0], sequence=client[1])))
    return machine


class _Raft:
    """What SnapshotSaves needs of a ReplicatedLog: a confirmed index and a capture at it."""

    def __init__(self, machine: SessionMachine) -> None:
        self._machine = machine

    async def read_index(self) -> int:
        return 1

    async def capture_applied(self) -> tuple[Capture, int, int]:
        return self._machine.capture(), 1_000_000, 1


class _Servicer(pb_grpc.SessionStoreServicer):
    def __init__(self, saves: SnapshotSaves) -> None:
        self._saves = saves

    async def SnapshotSave(
        self, request: pb.SnapshotSaveRequest, context: Any
    ) -> AsyncIterator[pb.SnapshotChunk]:
        save = await self._saves.begin()
        async for chunk in save.chunks():
            yield chunk


def serve(machine: SessionMachine, conn: Connection) -> None:
    """The child: a gRPC server with the node's save code; sends its port, then its peak RSS."""

    async def run() -> None:
        server = grpc.aio.server()
        pb_grpc.add_SessionStoreServicer_to_server(
            _Servicer(SnapshotSaves(_Raft(machine), "bench")),  # type: ignore[abstract, arg-type]
            server,
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        reset_peak()
        conn.send((port, rss_bytes()))
        await asyncio.to_thread(conn.recv)  # the parent is done
        conn.send(peak_rss_bytes())
        await server.stop(None)

    asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=300)
    args = parser.parse_args()
    results: dict[str, Any] = {"sessions": args.sessions, "value_bytes": args.value_bytes}

    started = time.perf_counter()
    machine = build(args.sessions, args.value_bytes)
    results["build_s"] = round(time.perf_counter() - started, 1)
    results["exactly_once_clients"] = machine.exactly_once_clients

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        parent_conn, child_conn = multiprocessing.Pipe()
        child = multiprocessing.get_context("fork").Process(target=serve, args=(machine, child_conn))
        child.start()
        port, child_base = parent_conn.recv()
        reset_peak()
        base = rss_bytes()
        started = time.perf_counter()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            _receive(pb_grpc.SessionStoreStub(channel), work / "b.sqbak", 3600)
        results["save_stream_s"] = round(time.perf_counter() - started, 1)
        results["client_peak_rss_growth_mb"] = round((peak_rss_bytes() - base) / 1e6, 1)
        parent_conn.send("done")
        results["node_peak_rss_growth_mb"] = round((parent_conn.recv() - child_base) / 1e6, 1)
        child.join(60)
        started = time.perf_counter()
        info = read_info(work / "b.sqbak")
        results["verify_s"] = round(time.perf_counter() - started, 1)
        results["file_bytes"] = info.file_bytes
        results["bytes_per_session"] = round(info.file_bytes / max(1, args.sessions), 1)
        assert info.digest == machine.digest()
        del machine

        started = time.perf_counter()
        assert cli_main(["snapshot", "restore", str(work / "b.sqbak"), "--out", str(work / "new")]) == 0
        results["restore_cli_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        loaded = SessionMachine(Limits())
        loaded.restore(read_snapshot(work / "new" / "n1" / "raft.snapshot").state)
        results["node_load_s"] = round(time.perf_counter() - started, 1)
        assert len(loaded.sessions) == args.sessions
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

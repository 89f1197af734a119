"""Snapshot costs at scale: capture under the lock, serialize off it, write, restore, RSS.

    .venv/bin/python bench/bench_snapshot.py [--sessions 1000000] [--value-bytes 300]

Builds a SessionMachine by applying real Create commands (one attribute of `--value-bytes`
bytes each), then measures what a node pays for one snapshot (store/snapshots.py):
- capture: `SessionMachine.capture()`, the part taken under the state lock on the tick thread;
- serialize: `Capture.serialize()` on a background thread, while a "ticker" thread that
  wakes every 5 ms (like pysyncobj's tick thread) records its longest gap: the stall a
  background snapshot still causes through the GIL;
- write: our snapshot file, fsynced; restore: read, verify and `restore()` into a fresh machine;
- RSS per session: the process's resident memory growth while building, divided by sessions.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path

from sessionquorum.store.commands import Command, Create, encode
from sessionquorum.store.config import Limits
from sessionquorum.store.snapshot_format import serialize_in_pieces
from sessionquorum.store.snapshots import read_snapshot, write_snapshot
from sessionquorum.store.state import SessionMachine

TICK_S = 0.005
DAY_MS = 24 * 3600 * 1000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(sessions: int, value_bytes: int) -> SessionMachine:
    machine = SessionMachine(Limits(max_sessions=max(sessions, 1)))
    value = b"v" * value_bytes
    for i in range(sessions):
        token_hash = hashlib.sha256(i.to_bytes(8, "little")).digest()
        op = Create(token_hash, f"h{i:012d}", None, (("data", value),), DAY_MS, 30 * DAY_MS)
        machine.apply(encode(Command(op, now_ms=1_700_000_000_000)))
    return machine


def longest_gap_while(work: threading.Thread) -> float:
    """Run `work` and return the longest wake-up gap of a 5 ms ticker meanwhile."""
    worst, last = 0.0, time.perf_counter()
    work.start()
    while work.is_alive():
        time.sleep(TICK_S)
        now = time.perf_counter()
        worst, last = max(worst, now - last - TICK_S), now
    work.join()
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=300)
    args = parser.parse_args()

    base = rss_bytes()
    started = time.perf_counter()
    machine = build(args.sessions, args.value_bytes)
    build_s = time.perf_counter() - started
    per_session = (rss_bytes() - base) / max(1, args.sessions)

    started = time.perf_counter()
    capture = machine.capture()
    capture_s = time.perf_counter() - started

    out: dict[str, bytes] = {}
    serialize_started = time.perf_counter()
    worker = threading.Thread(target=lambda: out.setdefault("state", b"".join(serialize_in_pieces(capture))))
    stall_s = longest_gap_while(worker)
    serialize_s = time.perf_counter() - serialize_started
    state = out["state"]

    with tempfile.TemporaryDirectory(prefix="sq-bench-snap-", dir=".") as tmp:
        path = Path(tmp) / "raft.snapshot"
        started = time.perf_counter()
        size = write_snapshot(path, (b"x", 2, 1), (b"x", 1, 1), ("a",), [state])
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        fresh = SessionMachine(Limits())
        fresh.restore(read_snapshot(path).state)
        restore_s = time.perf_counter() - started
    assert len(fresh.sessions) == args.sessions

    print(f"sessions {args.sessions:,} of {args.value_bytes} B (built in {build_s:.1f} s)")
    print(f"capture under lock   {capture_s * 1e3:9.1f} ms")
    print(
        f"serialize (thread)   {serialize_s * 1e3:9.1f} ms; longest 5 ms-ticker stall {stall_s * 1e3:.1f} ms"
    )
    print(f"write + fsync        {write_s * 1e3:9.1f} ms; snapshot {size / 1e6:.1f} MB")
    print(f"read + restore       {restore_s * 1e3:9.1f} ms")
    print(f"RSS per session      {per_session:9.0f} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Serialize a `Capture` in small steps, so the tick thread keeps getting the GIL.

`Capture.serialize()` sorts every session in one `sorted()` call and packs the whole state
in one `msgpack.packb` call: both are single C calls that hold the GIL throughout.
Measured at 100k sessions of 300 bytes (bench/bench_snapshot.py): 0.5 s sorting and 1.1 s
packing, and a thread that wakes every 5 ms (like pysyncobj's tick thread) saw a 2.0 s gap
while a background thread ran it: a leader would miss its heartbeats and be deposed.

Here sorting is done in chunks merged lazily, and every session is packed by its own call,
so the interpreter can switch threads between any two. The bytes are exactly those of
`Capture.serialize()` (a unit test compares them), so `SessionMachine.restore` reads them
and digests stay comparable.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any

import msgpack

from .config import limits_to_pairs
from .dedup import DedupTable
from .state import SNAPSHOT_FORMAT, Capture

# Keys sorted per chunk (one C call each), then merged by a Python generator.
SORT_CHUNK = 20_000
# Bytes gathered before a piece is handed to the writer.
PIECE_BYTES = 1024 * 1024


def _sorted_keys(keys: list[bytes]) -> Iterator[bytes]:
    chunks = [sorted(keys[i : i + SORT_CHUNK]) for i in range(0, len(keys), SORT_CHUNK)]
    return heapq.merge(*chunks)


def serialize_in_pieces(capture: Capture) -> Iterator[bytes]:
    """The canonical snapshot bytes of `capture`, as pieces of about PIECE_BYTES."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    out = bytearray()
    head: list[tuple[str, Any]] = [
        ("format", SNAPSHOT_FORMAT),
        ("now_ms", capture.now_ms),
        ("limits", [list(p) for p in limits_to_pairs(capture.limits)]),
        ("configured", capture.configured),
        ("members", sorted([k, lv] for k, lv in capture.member_levels.items())),
    ]
    out += packer.pack_map_header(8)
    for key, value in head:
        out += packer.pack(key)
        out += packer.pack(value)
    sessions = capture.sessions
    out += packer.pack("sessions")
    out += packer.pack_array_header(len(sessions))
    for token_hash in _sorted_keys(list(sessions)):
        s = sessions[token_hash]
        out += packer.pack(
            [
                s.token_hash,
                s.handle,
                s.principal,
                s.attributes,
                s.created_ms,
                s.last_access_ms,
                s.idle_timeout_ms,
                s.absolute_deadline_ms,
                s.version,
            ]
        )
        if len(out) >= PIECE_BYTES:
            yield bytes(out)
            out.clear()
    rows = DedupTable.to_wire(capture.dedup)
    out += packer.pack("dedup")
    out += packer.pack_array_header(len(rows))
    for row in rows:
        out += packer.pack(row)
        if len(out) >= PIECE_BYTES:
            yield bytes(out)
            out.clear()
    out += packer.pack("forgotten_ms")
    out += packer.pack(capture.forgotten_ms)
    yield bytes(out)

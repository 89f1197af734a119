"""The snapshot format: a `Capture` of the replicated state, written in small steps.

The one writer of the canonical snapshot bytes (a msgpack map; sessions sorted by token
hash), used for snapshot files, snapshot transfers and `Status` digests alike, so they can
never drift apart. `SessionMachine.restore` reads it.

Written in small steps so the tick thread keeps getting the GIL: one `sorted()` of every
session and one `msgpack.packb` of the whole state are single C calls that hold the GIL
throughout (measured at 100k sessions of 300 bytes, bench/bench_snapshot.py: 0.5 s sorting
and 1.1 s packing, and a thread waking every 5 ms, like pysyncobj's tick thread, saw a 2.0 s
gap: a leader would miss its heartbeats and be deposed). Here keys are sorted in chunks
merged lazily and every session is packed by its own call, so the interpreter can switch
threads between any two.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .config import Limits, limits_to_wire
from .dedup import DedupTable
from .secops import SecCapture, tombstone_row
from .session import Session

# 2: adds the replicated limits, member levels and the exactly-once table's forgotten_ms.
# 2 and 3 may carry the optional "nodes" key (live membership: node id -> Raft and gRPC address),
# written only when some node was added, so other states keep byte-identical snapshots and
# a reader of this code takes a snapshot without it as "no identities".
# 2 may carry the optional "secops" key (level 5; store/secops.py), written only once the
# cluster switched those rules on; older snapshots lack it and load as before.
# 3: adds the lifecycle event ring ("events", store/events.py), once EnableEvents applied.
# A state without the ring is still written as format 2, byte for byte as before, so a
# cluster that has not switched events on keeps the digests and snapshots of the release
# before; restore reads both.
SNAPSHOT_FORMAT = 3
FORMAT_WITHOUT_EVENTS = 2
READABLE_FORMATS = (FORMAT_WITHOUT_EVENTS, SNAPSHOT_FORMAT)

# Keys sorted per chunk (one C call each), then merged by a Python generator.
SORT_CHUNK = 20_000
# Bytes gathered before a piece is handed to the writer.
PIECE_BYTES = 1024 * 1024


def _sorted_keys(keys: list[bytes]) -> Iterator[bytes]:
    chunks = [sorted(keys[i : i + SORT_CHUNK]) for i in range(0, len(keys), SORT_CHUNK)]
    return heapq.merge(*chunks)


@dataclass(frozen=True, slots=True)
class Capture:
    """The replicated state at one log index (`SessionMachine.capture`); needs no lock."""

    now_ms: int
    limits: Limits
    configured: bool
    member_levels: dict[str, int]
    sessions: dict[bytes, Session]
    dedup: dict[bytes, Any]
    forgotten_ms: int
    # node id -> (raft address, grpc address), from MemberIdentity commands.
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)
    # EventRing.capture() once the ring is on, else None.
    events: list[Any] | None = None
    # Level-5 session-security state (store/secops.py); None leaves the "secops" key out.
    secops: SecCapture | None = None

    def pieces(self) -> Iterator[bytes]:
        return serialize_in_pieces(self)

    def serialize(self) -> bytes:
        return b"".join(self.pieces())

    def digest(self) -> str:
        sha = hashlib.sha256()
        for piece in self.pieces():
            sha.update(piece)
        return sha.hexdigest()


def serialize_in_pieces(capture: Capture) -> Iterator[bytes]:
    """The canonical snapshot bytes of `capture`, as pieces of about PIECE_BYTES."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    out = bytearray()
    events = capture.events
    head: list[tuple[str, Any]] = [
        ("format", FORMAT_WITHOUT_EVENTS if events is None else SNAPSHOT_FORMAT),
        ("now_ms", capture.now_ms),
        ("limits", [list(p) for p in limits_to_wire(capture.limits)]),
        ("configured", capture.configured),
        ("members", sorted([k, lv] for k, lv in capture.member_levels.items())),
    ]
    if capture.nodes:
        head.append(("nodes", sorted([k, r, g] for k, (r, g) in capture.nodes.items())))
    sec = capture.secops
    out += packer.pack_map_header(len(head) + 3 + (events is not None) + (sec is not None))
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
    if events is not None:
        max_count, max_bytes, next_cursor, rows = events
        out += packer.pack("events")
        out += packer.pack_array_header(4)
        out += packer.pack(max_count)
        out += packer.pack(max_bytes)
        out += packer.pack(next_cursor)
        out += packer.pack_array_header(len(rows))
        for row in rows:
            out += packer.pack(row)
            if len(out) >= PIECE_BYTES:
                yield bytes(out)
                out.clear()
    if sec is not None:
        out += packer.pack("secops")
        out += packer.pack_array_header(2)
        out += packer.pack_array_header(len(sec.tombstones))
        for hashed, tomb in sec.tombstones:
            out += packer.pack(tombstone_row(hashed, tomb))
            if len(out) >= PIECE_BYTES:
                yield bytes(out)
                out.clear()
        out += packer.pack(sec.disabled_rows())
    yield bytes(out)

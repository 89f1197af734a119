"""Snapshots: our file format, written off the tick thread, behind pysyncobj's serializer hooks.

pysyncobj's own snapshot pickles the replicated object, gzips it at level 9 and does so in
the tick thread under the state lock (measured ~19 us per session: ~19 s at 1 M sessions,
far past any election timeout). Here:

1. `begin` (pysyncobj's `serializer` hook, tick thread): take `capture()` under the state
   lock (a shallow copy of immutable records) and hand it to a background thread.
2. The thread serializes the capture in small steps (store/snapshot_format.py: one big C
   call would hold the GIL and stall the tick thread anyway), writes
   `raft.snapshot.next` and fsyncs it.
3. `check` (pysyncobj's `serializeChecker` hook, tick thread, every tick) renames it over
   `raft.snapshot` and fsyncs the directory, then reports success; only then does pysyncobj
   truncate the journal. The rename happens in the tick thread so that it is ordered with
   a snapshot install from the leader (also tick thread): if one arrived meanwhile (the
   capture is older than the installed state), the finished file is discarded instead.

pysyncobj renames its own temporary file over the snapshot right after the `serializer`
hook returns; we never create that file, so its rename fails harmlessly (pysyncobj records
the failure and then asks `check`, which decides).

The file: a header `<8s magic, u32 version, u32 crc32, u64 meta length, u64 state length>`,
a msgpack map (format version, the last included entry and the one before it, members),
then the state machine's canonical msgpack snapshot. pysyncobj needs the two boundary
entries to rebuild its journal; they are carried as the opaque bytes its journal holds and
are never decoded from this file. Pickle never enters it.
"""

from __future__ import annotations

import enum
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from .journal import Entry, fsync_dir

log = logging.getLogger(__name__)

MAGIC = b"SQSNAPSH"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIQQ")


class SnapshotCorrupt(Exception):
    """A snapshot file that fails its checksum or format check."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    last: Entry  # the last entry the state includes
    prev: Entry  # the entry before it (pysyncobj keeps both at the head of its journal)
    members: tuple[str, ...]
    state: bytes


def write_snapshot(
    path: Path, last: Entry, prev: Entry, members: tuple[str, ...], state: Iterable[bytes]
) -> int:
    """Write and fsync `path` (callers write a temporary name and rename); returns its size.

    The state comes in pieces (store/snapshot_format.py), so it is never held twice.
    """
    meta = msgpack.packb(
        {"v": FORMAT_VERSION, "last": list(last), "prev": list(prev), "members": list(members)},
        use_bin_type=True,
    )
    crc, state_len = zlib.crc32(meta), 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(fd, "wb", closefd=False) as f:
            f.write(b"\0" * _HEADER.size)
            f.write(meta)
            for piece in state:
                f.write(piece)
                crc, state_len = zlib.crc32(piece, crc), state_len + len(piece)
            f.seek(0)
            f.write(_HEADER.pack(MAGIC, FORMAT_VERSION, crc, len(meta), state_len))
        os.fsync(fd)
    finally:
        os.close(fd)
    return _HEADER.size + len(meta) + state_len


def read_snapshot(path: Path) -> Snapshot:
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        raise SnapshotCorrupt(f"{path}: {len(data)} bytes, shorter than the header")
    magic, version, crc, meta_len, state_len = _HEADER.unpack_from(data)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise SnapshotCorrupt(f"{path}: not a version-{FORMAT_VERSION} snapshot ({magic!r}, v{version})")
    if len(data) != _HEADER.size + meta_len + state_len:
        raise SnapshotCorrupt(f"{path}: {len(data)} bytes, header says {_HEADER.size + meta_len + state_len}")
    view = memoryview(data)
    meta_raw = view[_HEADER.size : _HEADER.size + meta_len]
    state = view[_HEADER.size + meta_len :]
    if zlib.crc32(state, zlib.crc32(meta_raw)) != crc:
        raise SnapshotCorrupt(f"{path}: checksum mismatch")
    meta = msgpack.unpackb(meta_raw, raw=False)

    def entry(raw: Any) -> Entry:
        command, index, term = raw
        return (bytes(command), int(index), int(term))

    return Snapshot(entry(meta["last"]), entry(meta["prev"]), tuple(meta["members"]), bytes(state))


class Progress(enum.Enum):
    IDLE = 0
    RUNNING = 1
    SUCCEEDED = 2  # reported once, then IDLE
    FAILED = 3  # reported once, then IDLE


class Snapshotter:
    """pysyncobj's serializer, serializeChecker and deserializer hooks for one node."""

    def __init__(
        self,
        path: Path,
        capture: Callable[[], Any],
        serialize: Callable[[Any], Iterable[bytes]],
        restore: Callable[[bytes], None],
    ) -> None:
        self.path = path
        self._next = path.with_name(path.name + ".next")
        self._next.unlink(missing_ok=True)  # a snapshot a crash interrupted: never complete
        self._capture = capture
        self._serialize = serialize
        self._restore = restore
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._result: tuple[Progress, int, float] | None = None  # outcome, bytes, seconds
        self._index = 0
        self._installs_at_begin = 0
        # What Status reports.
        self.snapshot_index = 0
        self.snapshot_bytes = path.stat().st_size if path.exists() else 0
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        self.loaded_at_start = False
        self.last_capture_s = 0.0
        self.last_write_s = 0.0

    @property
    def running(self) -> bool:
        return self._thread is not None

    def begin(self, tmp_file: str, data: Any) -> None:
        """pysyncobj's `serializer(fileName, (last, prev, cluster))`, on the tick thread."""
        del tmp_file  # pysyncobj renames it over the snapshot right away: never create it
        if self._thread is not None:
            return
        last, prev, cluster = data
        last_entry: Entry = (bytes(last[0]), int(last[1]), int(last[2]))
        prev_entry: Entry = (bytes(prev[0]), int(prev[1]), int(prev[2]))
        members = tuple(sorted(str(getattr(node, "address", node)) for node in cluster))
        started = _clock()
        try:
            capture = self._capture()
        except Exception:
            # Report it through check(): pysyncobj would otherwise wait for a snapshot
            # that never comes and stop compacting (and sending snapshots) for good.
            log.exception("capturing the state for a snapshot failed")
            self._thread = threading.Thread(target=lambda: None)
            self._result = (Progress.FAILED, 0, 0.0)
            return
        self.last_capture_s = _clock() - started
        self._index = int(last[1])
        self._installs_at_begin = self.snapshots_installed

        def run() -> None:
            try:
                began = _clock()
                size = write_snapshot(self._next, last_entry, prev_entry, members, self._serialize(capture))
                outcome = (Progress.SUCCEEDED, size, _clock() - began)
            except Exception:
                log.exception("writing a snapshot failed")
                outcome = (Progress.FAILED, 0, 0.0)
            with self._lock:
                self._result = outcome

        self._thread = threading.Thread(target=run, name="sq-snapshot", daemon=True)
        self._thread.start()

    def check(self) -> Progress:
        """pysyncobj's `serializeChecker`, on the tick thread, every tick."""
        if self._thread is None:
            return Progress.IDLE
        with self._lock:
            result, self._result = self._result, None
        if result is None:
            return Progress.RUNNING
        thread, self._thread = self._thread, None
        if thread.ident is not None:  # not the stand-in of a failed capture
            thread.join()
        outcome, size, seconds = result
        if outcome is Progress.SUCCEEDED and self._installs_at_begin != self.snapshots_installed:
            # An install replaced the state while we serialized an older one.
            log.info("discarding snapshot at index %d: a newer one was installed meanwhile", self._index)
            self._next.unlink(missing_ok=True)
            return Progress.FAILED
        if outcome is Progress.SUCCEEDED:
            os.replace(self._next, self.path)
            fsync_dir(self.path.parent)
            self.snapshot_index, self.snapshot_bytes = self._index, size
            self.snapshots_taken += 1
            self.last_write_s = seconds
            log.info("snapshot at index %d: %d bytes, written in %.3f s", self._index, size, seconds)
        return outcome

    def load(self, file_name: str, *, install: bool) -> Snapshot:
        """Read and verify a snapshot, then restore the state machine from it."""
        snap = read_snapshot(Path(file_name))
        # pysyncobj renamed an installed file into place without fsync: make it durable
        # before it truncates the journal behind it.
        fd = os.open(file_name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(Path(file_name).parent)
        self._restore(snap.state)
        self.snapshot_index = snap.last[1]
        self.snapshot_bytes = os.path.getsize(file_name)
        if install:
            self.snapshots_installed += 1
            log.info(
                "installed a snapshot from the leader: index %d, %d bytes", snap.last[1], self.snapshot_bytes
            )
        else:
            self.loaded_at_start = True
            log.info("loaded the snapshot at index %d (%d bytes)", snap.last[1], self.snapshot_bytes)
        return snap


def compaction_due(
    *,
    entries: int,
    size_bytes: int,
    since_snapshot: int,
    last_applied: int,
    rank: int,
    members: int,
    every_entries: int,
    max_bytes: int,
) -> bool:
    """Whether this node should snapshot now: staggered by log index, bounded by size.

    `entries` and `size_bytes` describe the journal, `since_snapshot` counts the entries
    applied since the last snapshot.

    The period is `every_entries`, halved while that many entries of the journal's average
    size would exceed half of `max_bytes`. Log index space is cut into `members` slots per
    period and a node starts a snapshot only in its own slot (`rank`, its position among
    the sorted member addresses): every node applies the same indexes at about the same
    time, so their snapshots start a third of a period apart (three nodes) and at most one
    node compacts at a time unless a snapshot outlasts a slot. A journal that reached
    `max_bytes` or twice the period snapshots at once, whatever the slot.
    """
    if entries < 4:
        return False
    if size_bytes >= max_bytes or entries >= 2 * every_entries:
        return True
    fit = (max_bytes // 2) / max(1.0, size_bytes / entries)
    period = every_entries
    while period > fit and period > 16:
        period //= 2
    slot = max(1, period // max(1, members))
    # Entries applied since the last snapshot, not the journal's length: the journal also
    # keeps entries from before the snapshot (RaftJournal.retain).
    return since_snapshot >= period // 2 and (last_applied // slot) % max(1, members) == rank


_clock = time.monotonic

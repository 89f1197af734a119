"""The Raft journal: our own file format behind pysyncobj's Journal interface (duck typed).

pysyncobj 0.3.17's FileJournal writes its last-record offset as an unsigned 32-bit integer
(every append raises past 4 GiB and the node wedges), rewrites itself in place when it
compacts (a crash halfway loses the log), and keeps term and vote in a pickled `.meta` file
that is never fsynced (an OS crash can allow two leaders in one term). This one:

- `raft.log`: a header (magic, format version, where records start), then records
  `<u64 length, u64 index, u64 term, u32 crc32> + command bytes`; every size and offset is
  64-bit. A record the checksum or the index sequence rejects ends the log: a torn tail
  (a crash mid-append) is cut on load and logged.
- Compaction (`deleteEntriesTo`) copies the kept tail into a new file, fsyncs it and renames
  it over the old one, so a crash leaves either the old journal or the new one.
- `raft.meta`: term, vote and commit index in msgpack, written with write + fsync + rename +
  directory fsync before `setCurrentTerm` returns: Raft needs the term and vote durable
  before a vote is answered.
- Appends collect in memory and reach the file in `before_send`, which the transport calls
  before every outgoing Raft message (and fsyncs in durability "fsync": group commit). No
  node acknowledges or counts an entry it has not written.

Entries are also kept in a list, as pysyncobj indexes the log constantly; the compaction
policy bounds it (store/DESIGN.md, "Snapshots and compaction").
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import msgpack

log = logging.getLogger(__name__)

MAGIC = b"SQRAFTLG"
FORMAT_VERSION = 1
META_VERSION = 1
# magic, format version, flags (0), offset of the first record.
_HEADER = struct.Struct("<8sIIQ")
# command length, index, term, crc32 of (the first 24 bytes + command).
_RECORD = struct.Struct("<QQQI")
_COPY_CHUNK_BYTES = 4 * 1024 * 1024

Entry = tuple[bytes, int, int]  # (command, index, term), as pysyncobj holds them


class JournalCorrupt(Exception):
    """The journal or its meta file cannot be read: refuse to start rather than guess."""


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_record(command: bytes, index: int, term: int) -> bytes:
    head = struct.pack("<QQQ", len(command), index, term)
    return head + struct.pack("<I", zlib.crc32(command, zlib.crc32(head))) + command


def write_header(fd: int, data_offset: int = _HEADER.size) -> None:
    """A fresh journal; `data_offset` lets a later version grow the header without moving records."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, _HEADER.pack(MAGIC, FORMAT_VERSION, 0, data_offset), 0)
    os.ftruncate(fd, data_offset)


class RaftJournal:
    """pysyncobj's Journal interface over `raft.log` and `raft.meta` in one directory."""

    def __init__(self, log_path: Path, meta_path: Path, *, fsync: bool) -> None:
        self._path = log_path
        self._meta_path = meta_path
        self._fsync = fsync
        self._entries: list[Entry] = []
        self._offsets: list[int] = []  # file offset of each entry's record
        self._pending = bytearray()  # appended records not yet written to the file
        self._file_end = 0  # bytes written to the file
        self._unsynced = False
        self.torn_bytes_cut = 0
        # Entries kept before a snapshot's head when compacting (set by the policy).
        self.retain = 0
        self._meta = self._load_meta()
        self._meta_dirty = False
        # A compaction a crash interrupted before its rename: the journal itself is whole.
        log_path.with_name(log_path.name + ".compact").unlink(missing_ok=True)
        self._fd = os.open(log_path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size == 0:
            write_header(self._fd)
            os.fsync(self._fd)
            fsync_dir(log_path.parent)
        self._load()

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, _HEADER.size, 0)
        if len(head) < _HEADER.size:
            raise JournalCorrupt(f"{self._path}: header truncated ({len(head)} bytes)")
        magic, version, _flags, data_offset = _HEADER.unpack(head)
        if magic != MAGIC:
            raise JournalCorrupt(f"{self._path}: not a sessionquorum journal (magic {magic!r})")
        if version != FORMAT_VERSION:
            raise JournalCorrupt(f"{self._path}: format {version}; this release reads {FORMAT_VERSION}")
        pos = data_offset
        with open(self._fd, "rb", closefd=False) as f:
            f.seek(data_offset)
            data = memoryview(f.read(max(0, size - data_offset)))
        at = 0
        while at + _RECORD.size <= len(data):
            length, index, term, crc = _RECORD.unpack_from(data, at)
            stop = at + _RECORD.size + length
            if stop > len(data):
                break
            command = bytes(data[at + _RECORD.size : stop])
            if zlib.crc32(command, zlib.crc32(data[at : at + 24])) != crc:
                break
            if self._entries and index != self._entries[-1][1] + 1:
                break
            self._entries.append((command, index, term))
            self._offsets.append(pos + at)
            at = stop
        end = pos + at
        if end < size:
            self.torn_bytes_cut = size - end
            log.warning(
                "journal %s: cut a torn or corrupt tail of %d bytes at offset %d (after index %s)",
                self._path,
                size - end,
                end,
                self._entries[-1][1] if self._entries else None,
            )
            os.ftruncate(self._fd, end)
            os.fsync(self._fd)
        self._file_end = end

    def _load_meta(self) -> dict[str, Any]:
        try:
            raw = self._meta_path.read_bytes()
        except FileNotFoundError:
            return {"v": META_VERSION, "term": 0, "voted_for": None, "commit_index": 1}
        try:
            meta = msgpack.unpackb(raw, raw=False)
        except Exception as exc:  # written by rename only: unreadable means the disk lied
            raise JournalCorrupt(f"{self._meta_path}: unreadable ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("v") != META_VERSION:
            raise JournalCorrupt(f"{self._meta_path}: unsupported meta {meta!r}")
        return meta

    def _store_meta(self) -> None:
        tmp = self._meta_path.with_name(self._meta_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, msgpack.packb(self._meta, use_bin_type=True))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._meta_path)
        fsync_dir(self._meta_path.parent)
        self._meta_dirty = False

    # ---------------------------------------------------------- the interface
    def add(self, command: bytes, idx: int, term: int) -> None:
        command = bytes(command)
        self._offsets.append(self._file_end + len(self._pending))
        self._entries.append((command, idx, term))
        self._pending += encode_record(command, idx, term)

    def clear(self) -> None:
        """Empty the log (pysyncobj then adds the two entries of an installed snapshot)."""
        self._entries, self._offsets, self._pending = [], [], bytearray()
        write_header(self._fd)
        os.fsync(self._fd)
        self._file_end = _HEADER.size
        self._unsynced = False

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Drop entries from position `entryFrom` on (a conflict with the leader's log)."""
        if entryFrom >= len(self._entries):
            return
        cut = self._offsets[max(entryFrom, 0)]
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        if cut >= self._file_end:
            del self._pending[cut - self._file_end :]
            return
        self._pending = bytearray()
        os.ftruncate(self._fd, cut)
        self._file_end = cut
        self._unsynced = True

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop entries before position `entryTo` (compaction after a snapshot), but `retain`.

        Keeping `retain` entries from before the snapshot lets a follower that installs a
        snapshot older than the leader's latest (a transfer outlasting a compaction)
        continue from the journal instead of needing the whole newer snapshot again.
        The kept tail is copied into a new file that replaces the old one by rename: a
        crash leaves one whole journal, never a half-rewritten one.
        """
        self._drop_before(entryTo - self.retain)

    def _drop_before(self, entryTo: int) -> None:
        if entryTo <= 0:
            return
        entryTo = min(entryTo, len(self._entries))
        self._write_pending()
        start = self._offsets[entryTo] if entryTo < len(self._offsets) else self._file_end
        tmp = self._path.with_name(self._path.name + ".compact")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_header(fd)
            at, out = start, _HEADER.size
            while at < self._file_end:
                chunk = os.pread(self._fd, min(_COPY_CHUNK_BYTES, self._file_end - at), at)
                os.pwrite(fd, chunk, out)
                at, out = at + len(chunk), out + len(chunk)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        os.replace(tmp, self._path)
        fsync_dir(self._path.parent)
        os.close(self._fd)
        self._fd = fd
        shift = start - _HEADER.size
        self._entries = self._entries[entryTo:]
        self._offsets = [o - shift for o in self._offsets[entryTo:]]
        self._file_end -= shift
        self._unsynced = False

    def __getitem__(self, item: int | slice) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        if self._fd < 0:
            return
        self._write_pending()
        os.fsync(self._fd)
        if self._meta_dirty:
            self._store_meta()
        os.close(self._fd)
        self._fd = -1

    def flush(self) -> None:
        self.before_send()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        if self._meta["commit_index"] != raftCommitIndex:
            self._meta["commit_index"] = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        # Never beyond what this journal holds (durability "none" after an OS crash).
        stored = int(self._meta["commit_index"])
        return min(stored, self._entries[-1][1]) if self._entries else stored

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        """Durable before it returns: pysyncobj answers or requests a vote right after."""
        self._meta["term"], self._meta["voted_for"] = term, votedForNodeId
        self._store_meta()

    def getCurrentTerm(self) -> int:
        return int(self._meta["term"])

    def getVotedForNodeId(self) -> Any:
        return self._meta["voted_for"]

    def onOneSecondTimer(self) -> None:
        # The commit index is a hint (pysyncobj re-learns it from the leader): once a second.
        self.before_send()
        if self._meta_dirty:
            self._store_meta()

    # ----------------------------------------------------------------- ours
    def before_send(self) -> None:
        """Group commit: write what was appended since the last message, fsync in "fsync" mode."""
        self._write_pending()
        if self._fsync and self._unsynced:
            os.fsync(self._fd)
            self._unsynced = False

    def _write_pending(self) -> None:
        if self._pending:
            os.pwrite(self._fd, self._pending, self._file_end)
            self._file_end += len(self._pending)
            self._pending = bytearray()
            self._unsynced = True

    def align_to_snapshot(self, prev: Entry, last: Entry) -> bool:
        """Drop entries before `prev` when the log holds both boundary entries of a snapshot.

        A crash after the snapshot file was renamed into place but before pysyncobj
        truncated the journal leaves a journal that starts earlier; pysyncobj would then
        clear the whole journal on load and lose the entries after the snapshot.
        """
        if not self._entries:
            return False
        first = self._entries[0][1]
        at = prev[1] - first
        if at <= 0 or at + 1 >= len(self._entries):
            return False
        if self._entries[at] != prev or self._entries[at + 1] != last:
            return False
        self._drop_before(at)
        return True

    @property
    def size_bytes(self) -> int:
        return self._file_end + len(self._pending)

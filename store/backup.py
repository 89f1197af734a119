"""The backup file: the replicated state at one log index, checksummed and versioned.

`sessionquorum snapshot save` writes it from the stream the leader sends (`SnapshotSave`),
`snapshot restore` reads it to seed a new cluster. Never pickle: the state is the state
machine's canonical msgpack snapshot (store/snapshot_format.py, the bytes `Status` digests),
so the file's state checksum *is* the cluster's state digest at that index.

Layout:

    prefix  <8s magic "SQBACKUP", u32 version (1), u32 meta length, u64 state length,
             32s sha256 of the state (= Status.state_digest), 32s sha256 of the meta>
    meta    msgpack map: index, term, leader node id, saved_at_ms (the leader's wall
            clock), now_ms (the cluster's time), state format, session and exactly-once
            counts, limits, member levels, the sha256 of the source cluster's CA certificate
    state   the canonical snapshot bytes

The prefix is written last (the writer seeks back), so a file cut short anywhere fails its
length or checksum check; the writer also works on a `.partial` name and renames at the end.
Reading is streamed (1 MiB at a time): verifying a 400 MB backup holds 1 MiB.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from .config import Limits, limits_to_pairs
from .snapshot_format import SNAPSHOT_FORMAT, Capture
from .state import SessionMachine

MAGIC = b"SQBACKUP"
BACKUP_VERSION = 1
_PREFIX = struct.Struct("<8sIIQ32s32s")
# A meta map is a few hundred bytes; anything larger is not one of ours.
MAX_META_BYTES = 1024 * 1024
READ_BYTES = 1024 * 1024


class BackupCorrupt(Exception):
    """A backup file that is not one, is of another version, is cut short or fails a checksum."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What the file says about itself (its meta), and its sizes and checksums."""

    index: int
    term: int
    leader: str
    saved_at_ms: int
    now_ms: int
    state_format: int
    sessions: int
    exactly_once_clients: int
    limits: dict[str, Any]
    member_levels: dict[str, int]
    cluster_ca_sha256: str  # the source cluster's CA certificate: which cluster this came from
    state_bytes: int
    digest: str  # sha256 of the state: Status.state_digest of the source at `index`
    file_bytes: int

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "term": self.term,
            "leader": self.leader,
            "saved_at_ms": self.saved_at_ms,
            "now_ms": self.now_ms,
            "sessions": self.sessions,
            "exactly_once_clients": self.exactly_once_clients,
            "cluster_ca_sha256": self.cluster_ca_sha256,
            "state_bytes": self.state_bytes,
            "file_bytes": self.file_bytes,
            "digest": self.digest,
        }


def make_meta(
    capture: Capture, *, index: int, term: int, leader: str, saved_at_ms: int, cluster_ca_sha256: str = ""
) -> bytes:
    """The meta of a backup of `capture`, taken at log `index` (the leader writes it)."""
    return bytes(
        msgpack.packb(
            {
                "v": BACKUP_VERSION,
                "index": index,
                "term": term,
                "leader": leader,
                "saved_at_ms": saved_at_ms,
                "now_ms": capture.now_ms,
                "state_format": SNAPSHOT_FORMAT,
                "sessions": len(capture.sessions),
                "exactly_once_clients": len(capture.dedup),
                "limits": dict(limits_to_pairs(capture.limits)),
                "member_levels": dict(sorted(capture.member_levels.items())),
                "cluster_ca_sha256": cluster_ca_sha256,
            },
            use_bin_type=True,
        )
    )


def _parse_meta(raw: bytes, where: str) -> dict[str, Any]:
    try:
        meta = msgpack.unpackb(raw, raw=False)
    except (ValueError, msgpack.ExtraData) as exc:
        raise BackupCorrupt(f"{where}: the meta is not msgpack ({exc})") from None
    needed = ("index", "term", "leader", "saved_at_ms", "now_ms", "state_format", "limits", "member_levels")
    if not isinstance(meta, dict) or any(k not in meta for k in needed):
        raise BackupCorrupt(f"{where}: the meta lacks fields ({', '.join(needed)})")
    if meta["state_format"] != SNAPSHOT_FORMAT:
        raise BackupCorrupt(
            f"{where}: the state is in snapshot format {meta['state_format']!r}; "
            f"this release reads format {SNAPSHOT_FORMAT}"
        )
    return meta


class BackupWriter:
    """Writes a backup from its meta and state pieces; `finish` checks and renames it into place."""

    def __init__(self, path: Path, meta: bytes) -> None:
        if len(meta) > MAX_META_BYTES:
            raise BackupCorrupt(f"the meta is {len(meta)} bytes, more than {MAX_META_BYTES}")
        self.path = path
        self._partial = path.with_name(path.name + ".partial")
        self._meta = meta
        self._sha = hashlib.sha256()
        self.state_bytes = 0
        self._file: BinaryIO = open(self._partial, "wb")  # noqa: SIM115 - closed in finish/abort
        self._file.write(b"\0" * _PREFIX.size)
        self._file.write(meta)

    def write(self, piece: bytes) -> None:
        self._file.write(piece)
        self._sha.update(piece)
        self.state_bytes += len(piece)

    def finish(self, *, expected_digest: bytes | None = None, expected_bytes: int | None = None) -> int:
        """Check what the sender says it sent, write the prefix, fsync, rename; returns the size."""
        digest = self._sha.digest()
        try:
            if expected_digest is not None and expected_digest != digest:
                raise BackupCorrupt("the state received does not match the sender's sha256")
            if expected_bytes is not None and expected_bytes != self.state_bytes:
                raise BackupCorrupt(f"received {self.state_bytes} state bytes, sent: {expected_bytes}")
            self._file.seek(0)
            self._file.write(
                _PREFIX.pack(
                    MAGIC,
                    BACKUP_VERSION,
                    len(self._meta),
                    self.state_bytes,
                    digest,
                    hashlib.sha256(self._meta).digest(),
                )
            )
            self._file.flush()
            os.fsync(self._file.fileno())
        except BaseException:
            self.abort()
            raise
        self._file.close()
        os.replace(self._partial, self.path)
        return _PREFIX.size + len(self._meta) + self.state_bytes

    def abort(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)


def _read_exactly(f: BinaryIO, size: int) -> bytes:
    data = f.read(size)
    return data if data is not None else b""


def read_info(path: Path) -> BackupInfo:
    """Verify `path` completely (streamed) and return what it holds; BackupCorrupt if anything is off."""
    where = str(path)
    with open(path, "rb") as f:
        file_bytes = os.fstat(f.fileno()).st_size
        prefix = _read_exactly(f, _PREFIX.size)
        if len(prefix) < _PREFIX.size:
            raise BackupCorrupt(f"{where}: {len(prefix)} bytes, too short to be a sessionquorum backup")
        magic, version, meta_len, state_len, state_sha, meta_sha = _PREFIX.unpack(prefix)
        if magic != MAGIC:
            raise BackupCorrupt(f"{where}: not a sessionquorum backup (magic {magic!r})")
        if version != BACKUP_VERSION:
            raise BackupCorrupt(
                f"{where}: backup format version {version}; this release reads version {BACKUP_VERSION}"
            )
        expected = _PREFIX.size + meta_len + state_len
        if meta_len > MAX_META_BYTES or file_bytes < expected:
            raise BackupCorrupt(f"{where}: truncated: {file_bytes} bytes, the header says {expected}")
        if file_bytes > expected:
            raise BackupCorrupt(f"{where}: {file_bytes - expected} unexpected bytes after the state")
        meta_raw = _read_exactly(f, meta_len)
        if hashlib.sha256(meta_raw).digest() != meta_sha:
            raise BackupCorrupt(f"{where}: the meta fails its sha256 checksum")
        meta = _parse_meta(meta_raw, where)
        sha = hashlib.sha256()
        for piece in _pieces(f, state_len):
            sha.update(piece)
        if sha.digest() != state_sha:
            raise BackupCorrupt(f"{where}: the state fails its sha256 checksum")
    return BackupInfo(
        index=int(meta["index"]),
        term=int(meta["term"]),
        leader=str(meta["leader"]),
        saved_at_ms=int(meta["saved_at_ms"]),
        now_ms=int(meta["now_ms"]),
        state_format=int(meta["state_format"]),
        sessions=int(meta.get("sessions", 0)),
        exactly_once_clients=int(meta.get("exactly_once_clients", 0)),
        limits=dict(meta["limits"]),
        member_levels={str(k): int(v) for k, v in meta["member_levels"].items()},
        cluster_ca_sha256=str(meta.get("cluster_ca_sha256", "")),
        state_bytes=state_len,
        digest=state_sha.hex(),
        file_bytes=file_bytes,
    )


def _pieces(f: BinaryIO, size: int) -> Iterator[bytes]:
    left = size
    while left > 0:
        piece = _read_exactly(f, min(READ_BYTES, left))
        if not piece:
            raise BackupCorrupt(f"truncated: {left} state bytes missing")
        left -= len(piece)
        yield piece


def read_state(path: Path, info: BackupInfo) -> bytes:
    """The state bytes of a file `read_info` verified (checked again against its digest)."""
    with open(path, "rb") as f:
        _, _, meta_len, state_len, _, _ = _PREFIX.unpack(_read_exactly(f, _PREFIX.size))
        f.seek(_PREFIX.size + meta_len)
        state = _read_exactly(f, state_len)
    if len(state) != info.state_bytes or hashlib.sha256(state).hexdigest() != info.digest:
        raise BackupCorrupt(f"{path}: changed since it was verified")
    return state


def restored_capture(path: Path, info: BackupInfo, *, now_ms: int | None = None) -> Capture:
    """Load the verified state into a state machine (it must decode) and capture it again.

    `now_ms` moves the cluster's time forward to at least that value (never back): a restore
    from an old backup judges idle and absolute deadlines by the time of the restore, not
    the time of the save. The capture is what a restored node's snapshot holds.
    """
    machine = SessionMachine(Limits())
    try:
        machine.restore(read_state(path, info))
    except BackupCorrupt:
        raise
    except Exception as exc:  # a checksum-valid file whose state does not decode
        raise BackupCorrupt(f"{path}: the state does not decode ({type(exc).__name__}: {exc})") from None
    if now_ms is not None:
        machine.now_ms = max(machine.now_ms, now_ms)
    return machine.capture()

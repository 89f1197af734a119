"""The backup file (store/backup.py): round trip, checksums, truncation, versions, content."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import msgpack
import pytest

from sessionquorum.store import backup, backup_stream
from sessionquorum.store.backup import BackupCorrupt, BackupWriter, make_meta, read_info, restored_capture
from sessionquorum.store.backup_stream import SnapshotSaves
from sessionquorum.store.commands import Command, Create, Rotate, Update, encode
from sessionquorum.store.config import Limits
from sessionquorum.store.errors import QuotaExceeded
from sessionquorum.store.snapshot_format import Capture, serialize_in_pieces
from sessionquorum.store.state import SessionMachine

NOW_MS = 1_700_000_000_000


def _token(n: int) -> bytes:
    return hashlib.sha256(f"token-{n}".encode()).digest()


def _machine(sessions: int = 50) -> SessionMachine:
    m = SessionMachine(Limits(max_sessions_per_principal=100))
    for n in range(sessions):
        op = Create(_token(n), f"h{n}", f"p{n % 7}", (("a", b"x" * n),), 60_000, 3_600_000)
        m.apply(encode(Command(op, now_ms=NOW_MS + n, client_id=b"c%d" % (n % 5), sequence=n + 1)))
    touched = Update(_token(1), set=(("b", b"1"),), delete=(), expected_version=None)
    m.apply(encode(Command(touched, now_ms=NOW_MS + 100)))
    m.apply(encode(Command(Rotate(_token(2), _token(1000), None), now_ms=NOW_MS + 101)))
    return m


def _save(path: Path, capture: Capture, *, index: int = 42, piece_bytes: int | None = None) -> int:
    writer = BackupWriter(path, make_meta(capture, index=index, term=3, leader="n1", saved_at_ms=NOW_MS))
    state = b"".join(serialize_in_pieces(capture))
    step = piece_bytes or len(state) or 1
    for i in range(0, len(state), step):
        writer.write(state[i : i + step])
    return writer.finish(expected_digest=hashlib.sha256(state).digest(), expected_bytes=len(state))


def test_round_trip_keeps_index_term_counts_and_the_state_digest(tmp_path: Path) -> None:
    m = _machine()
    capture = m.capture()
    size = _save(tmp_path / "b.sqbak", capture, piece_bytes=100)
    info = read_info(tmp_path / "b.sqbak")
    assert size == info.file_bytes == (tmp_path / "b.sqbak").stat().st_size
    assert (info.index, info.term, info.leader, info.saved_at_ms) == (42, 3, "n1", NOW_MS)
    assert (info.sessions, info.exactly_once_clients, info.now_ms) == (50, 5, m.now_ms)
    assert info.digest == m.digest()  # the file's state checksum is the cluster's state digest
    assert info.member_levels == capture.member_levels
    assert info.limits["max_sessions_per_principal"] == 100
    restored = restored_capture(tmp_path / "b.sqbak", info)
    assert restored.digest() == m.digest()
    assert restored.sessions == capture.sessions and restored.dedup == capture.dedup
    assert not (tmp_path / "b.sqbak.partial").exists()


def test_restore_moves_the_clock_forward_but_never_back(tmp_path: Path) -> None:
    m = _machine()
    _save(tmp_path / "b", m.capture())
    info = read_info(tmp_path / "b")
    later = restored_capture(tmp_path / "b", info, now_ms=m.now_ms + 3_600_000)
    assert later.now_ms == m.now_ms + 3_600_000 and later.sessions == m.capture().sessions
    assert restored_capture(tmp_path / "b", info, now_ms=1).now_ms == m.now_ms


def test_a_flipped_byte_anywhere_is_refused_with_a_checksum_error(tmp_path: Path) -> None:
    _save(tmp_path / "b", _machine().capture())
    good = (tmp_path / "b").read_bytes()
    prefix = struct.calcsize("<8sIIQ32s32s")
    for at, what in ((prefix + 3, "meta"), (len(good) - 5, "state"), (prefix - 1, "meta")):
        bad = bytearray(good)
        bad[at] ^= 0x40
        (tmp_path / "bad").write_bytes(bad)
        with pytest.raises(BackupCorrupt, match=f"{what} fails its sha256"):
            read_info(tmp_path / "bad")


def test_a_truncated_file_is_refused_as_truncated(tmp_path: Path) -> None:
    _save(tmp_path / "b", _machine().capture())
    good = (tmp_path / "b").read_bytes()
    for keep in (len(good) - 1, len(good) // 2, 100):
        (tmp_path / "cut").write_bytes(good[:keep])
        with pytest.raises(BackupCorrupt, match="truncated"):
            read_info(tmp_path / "cut")
    (tmp_path / "cut").write_bytes(good[:10])
    with pytest.raises(BackupCorrupt, match="too short"):
        read_info(tmp_path / "cut")
    (tmp_path / "long").write_bytes(good + b"\0")
    with pytest.raises(BackupCorrupt, match="unexpected bytes"):
        read_info(tmp_path / "long")


def test_another_version_or_another_file_kind_is_refused_by_name(tmp_path: Path) -> None:
    _save(tmp_path / "b", _machine().capture())
    good = bytearray((tmp_path / "b").read_bytes())
    newer = bytearray(good)
    newer[8:12] = struct.pack("<I", backup.BACKUP_VERSION + 1)
    (tmp_path / "v").write_bytes(newer)
    with pytest.raises(BackupCorrupt, match=r"version 2; this release reads version 1"):
        read_info(tmp_path / "v")
    (tmp_path / "snap").write_bytes(b"SQSNAPSH" + bytes(good[8:]))
    with pytest.raises(BackupCorrupt, match="not a sessionquorum backup"):
        read_info(tmp_path / "snap")


def test_a_state_in_another_snapshot_format_is_refused(tmp_path: Path) -> None:
    capture = _machine(3).capture()
    meta = msgpack.unpackb(make_meta(capture, index=1, term=1, leader="n1", saved_at_ms=0))
    meta["state_format"] = 99
    writer = BackupWriter(tmp_path / "b", msgpack.packb(meta))
    writer.write(capture.serialize())
    writer.finish()
    with pytest.raises(BackupCorrupt, match="snapshot format 99"):
        read_info(tmp_path / "b")


def test_a_checksum_valid_state_that_does_not_decode_is_refused_before_any_node_sees_it(
    tmp_path: Path,
) -> None:
    capture = _machine(3).capture()
    writer = BackupWriter(tmp_path / "b", make_meta(capture, index=1, term=1, leader="n1", saved_at_ms=0))
    writer.write(b"\x81\xa6format\x02")  # a map that lacks every other key
    writer.finish()
    info = read_info(tmp_path / "b")
    with pytest.raises(BackupCorrupt, match="does not decode"):
        restored_capture(tmp_path / "b", info)


def test_a_stream_that_does_not_match_the_senders_checksum_leaves_no_file(tmp_path: Path) -> None:
    capture = _machine(3).capture()
    writer = BackupWriter(tmp_path / "b", make_meta(capture, index=1, term=1, leader="n1", saved_at_ms=0))
    writer.write(capture.serialize()[:-1])
    with pytest.raises(BackupCorrupt, match="sha256"):
        writer.finish(expected_digest=hashlib.sha256(capture.serialize()).digest())
    assert list(tmp_path.iterdir()) == []


class _HeldRaft:
    """A ReplicatedLog stand-in whose capture waits until the test releases it."""

    def __init__(self, capture: Capture) -> None:
        self.capture = capture
        self.release = asyncio.Event()

    async def read_index(self) -> int:
        return 7

    async def capture_applied(self) -> tuple[Capture, int, int]:
        await self.release.wait()
        return self.capture, 7, 2


def test_a_second_save_on_a_node_is_refused_resource_exhausted_until_the_first_ends() -> None:
    async def scenario() -> None:
        raft = _HeldRaft(_machine(3).capture())
        saves = SnapshotSaves(raft, "n1")  # type: ignore[arg-type]
        first = asyncio.create_task(saves.begin())
        await asyncio.sleep(0)
        with pytest.raises(QuotaExceeded) as refused:
            await saves.begin()
        assert refused.value.status is grpc.StatusCode.RESOURCE_EXHAUSTED and saves.saves_refused == 1
        raft.release.set()
        prepared = await first
        chunks = [c async for c in prepared.chunks()]
        assert chunks[0].meta == prepared.meta and chunks[-1].state_bytes == len(raft.capture.serialize())
        assert chunks[-1].state_sha256 == hashlib.sha256(raft.capture.serialize()).digest()
        again = await saves.begin()  # the slot is free once the stream ended
        saves.release()
        assert again.index == 7

    asyncio.run(scenario())


def test_a_save_whose_caller_went_away_during_the_capture_frees_the_slot() -> None:
    async def scenario() -> None:
        raft = _HeldRaft(_machine(3).capture())
        saves = SnapshotSaves(raft, "n1")  # type: ignore[arg-type]
        first = asyncio.create_task(saves.begin())
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        raft.release.set()
        assert (await saves.begin()).index == 7

    asyncio.run(scenario())


def test_a_save_that_outlasts_its_bound_is_ended_and_frees_the_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_pieces(capture: Capture) -> Iterator[bytes]:
        for _ in range(1000):  # 1000 x 10 ms: far past the bound below
            time.sleep(0.01)
            yield b"x"

    monkeypatch.setattr(backup_stream, "SAVE_MAX_S", 0.2)
    monkeypatch.setattr(backup_stream, "serialize_in_pieces", slow_pieces)

    async def scenario() -> int:
        raft = _HeldRaft(_machine(3).capture())
        raft.release.set()
        saves = SnapshotSaves(raft, "n1")  # type: ignore[arg-type]
        prepared = await saves.begin()
        received = 0
        with pytest.raises(TimeoutError):
            async for _chunk in prepared.chunks():
                received += 1
        await saves.begin()  # the slot is free again
        return received

    assert 1 < asyncio.run(scenario()) < 100

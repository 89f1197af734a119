"""The Raft journal: file format, torn tails, compaction crashes, meta durability, 64-bit offsets."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest

from sessionquorum.store import journal as journal_module
from sessionquorum.store.journal import JournalCorrupt, RaftJournal, write_header

GIB = 1024**3


def _open(tmp_path: Path, *, fsync: bool = True) -> RaftJournal:
    return RaftJournal(tmp_path / "raft.log", tmp_path / "raft.meta", fsync=fsync)


def _fill(j: RaftJournal, first: int, count: int, term: int = 1) -> list[tuple[bytes, int, int]]:
    entries = [(f"cmd-{i}".encode() * (i % 7 + 1), i, term) for i in range(first, first + count)]
    for entry in entries:
        j.add(*entry)
    j.before_send()
    return entries


def test_journal_entries_reopened_are_identical_including_slices(tmp_path: Path) -> None:
    j = _open(tmp_path)
    entries = _fill(j, 1, 50)
    j._destroy()
    j2 = _open(tmp_path)
    assert len(j2) == 50
    assert j2[0] == entries[0] and j2[-1] == entries[-1]
    assert j2[10:13] == entries[10:13] and j2[-3:] == entries[-3:]
    assert j2.torn_bytes_cut == 0


def test_journal_appends_reach_the_file_only_at_before_send(tmp_path: Path) -> None:
    j = _open(tmp_path)
    _fill(j, 1, 3)
    size = (tmp_path / "raft.log").stat().st_size
    j.add(b"pending", 4, 1)
    assert (tmp_path / "raft.log").stat().st_size == size
    j.before_send()
    assert (tmp_path / "raft.log").stat().st_size > size
    assert j.size_bytes == (tmp_path / "raft.log").stat().st_size


def test_journal_torn_tail_is_cut_on_load_and_appends_continue(tmp_path: Path) -> None:
    j = _open(tmp_path)
    entries = _fill(j, 1, 20)
    j._destroy()
    path = tmp_path / "raft.log"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 3)  # a crash in the middle of the last record
    j2 = _open(tmp_path)
    assert j2.torn_bytes_cut > 0
    assert list(j2[:]) == entries[:-1]
    j2.add(b"again", 20, 2)
    j2._destroy()
    j3 = _open(tmp_path)
    assert j3[-1] == (b"again", 20, 2) and j3.torn_bytes_cut == 0


def test_journal_flipped_byte_in_last_record_is_cut_by_checksum(tmp_path: Path) -> None:
    j = _open(tmp_path)
    entries = _fill(j, 1, 5)
    j._destroy()
    path = tmp_path / "raft.log"
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    j2 = _open(tmp_path)
    assert j2.torn_bytes_cut > 0 and list(j2[:]) == entries[:-1]


def test_journal_delete_from_truncates_pending_and_written_entries(tmp_path: Path) -> None:
    j = _open(tmp_path)
    entries = _fill(j, 1, 10)
    j.add(b"unsent", 11, 1)
    j.deleteEntriesFrom(10)  # the pending one
    j.deleteEntriesFrom(6)  # written ones
    j.add(b"new", 7, 3)
    j._destroy()
    j2 = _open(tmp_path)
    assert list(j2[:]) == [*entries[:6], (b"new", 7, 3)]


def test_journal_delete_to_compacts_into_a_smaller_file(tmp_path: Path) -> None:
    j = _open(tmp_path)
    entries = _fill(j, 1, 100)
    before = j.size_bytes
    j.deleteEntriesTo(90)
    assert list(j[:]) == entries[90:] and j.size_bytes < before
    j.add(b"after", 101, 1)
    j._destroy()
    j2 = _open(tmp_path)
    assert list(j2[:]) == [*entries[90:], (b"after", 101, 1)]
    assert (tmp_path / "raft.log").stat().st_size == j2.size_bytes


def test_journal_crash_before_compaction_rename_keeps_the_whole_old_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = _open(tmp_path)
    entries = _fill(j, 1, 40)
    crashes = []

    def crash(src: object, dst: object) -> None:
        crashes.append(src)
        raise OSError("simulated crash between writing the new file and the rename")

    monkeypatch.setattr(journal_module.os, "replace", crash)
    with pytest.raises(OSError):
        j.deleteEntriesTo(30)
    monkeypatch.undo()
    assert crashes, "the compaction never reached its rename"
    assert (tmp_path / "raft.log.compact").exists()  # the half-done step is on disk
    j2 = _open(tmp_path)
    assert list(j2[:]) == entries
    assert not (tmp_path / "raft.log.compact").exists()


def test_journal_crash_after_compaction_rename_loads_the_new_journal(tmp_path: Path) -> None:
    j = _open(tmp_path)
    entries = _fill(j, 1, 40)
    j.deleteEntriesTo(30)
    # No _destroy: the process dies right after the rename.
    j2 = _open(tmp_path)
    assert list(j2[:]) == entries[30:]


def test_journal_set_current_term_is_fsynced_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = _open(tmp_path, fsync=False)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    j.setCurrentTerm(7, "127.0.0.1:1234")
    assert len(synced) >= 2, "meta file and its directory must both be fsynced"
    meta = msgpack.unpackb((tmp_path / "raft.meta").read_bytes())
    assert (meta["term"], meta["voted_for"]) == (7, "127.0.0.1:1234")
    j2 = _open(tmp_path)
    assert (j2.getCurrentTerm(), j2.getVotedForNodeId()) == (7, "127.0.0.1:1234")


def test_journal_meta_is_msgpack_never_pickle(tmp_path: Path) -> None:
    j = _open(tmp_path)
    j.setCurrentTerm(3, None)
    raw = (tmp_path / "raft.meta").read_bytes()
    assert not raw.startswith(b"\x80"), "pickle protocol marker"
    assert msgpack.unpackb(raw)["v"] == 1


def test_journal_commit_index_is_clamped_to_the_last_entry(tmp_path: Path) -> None:
    j = _open(tmp_path)
    _fill(j, 1, 5)
    j.setRaftCommitIndex(50)
    j.onOneSecondTimer()
    j._destroy()
    assert _open(tmp_path).getRaftCommitIndex() == 5


def test_journal_fsync_mode_syncs_once_per_batch_and_none_mode_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    for fsync, sub in ((True, "a"), (False, "b")):
        (tmp_path / sub).mkdir()
        j = _open(tmp_path / sub, fsync=fsync)
        monkeypatch.setattr(journal_module.os, "fsync", lambda fd: synced.append(fd))
        for i in range(1, 11):
            j.add(b"x", i, 1)
        j.before_send()
        j.before_send()  # nothing new: no second fsync
        monkeypatch.undo()
        assert len(synced) == (1 if fsync else 0)
        synced.clear()


def test_journal_offsets_past_4_gib_survive_append_truncate_reload_and_compaction(tmp_path: Path) -> None:
    # A sparse file whose records start at 5 GiB: every offset the journal handles is
    # beyond what a 32-bit field holds, without writing 4 GiB.
    path = tmp_path / "raft.log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    write_header(fd, data_offset=5 * GIB)
    os.close(fd)
    j = _open(tmp_path)
    entries = _fill(j, 1, 30)
    assert j.size_bytes > 5 * GIB
    j.deleteEntriesFrom(25)
    j._destroy()
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 1)  # torn tail, also past 4 GiB
    j2 = _open(tmp_path)
    assert j2.torn_bytes_cut > 0 and list(j2[:]) == entries[:24]
    j2.deleteEntriesTo(20)
    assert path.stat().st_size < GIB
    j2._destroy()
    assert list(_open(tmp_path)[:]) == entries[20:24]


def test_journal_align_to_snapshot_drops_entries_before_the_snapshot(tmp_path: Path) -> None:
    j = _open(tmp_path)
    entries = _fill(j, 1, 20)
    assert j.align_to_snapshot(entries[9], entries[10])
    assert j[0] == entries[9] and j[1] == entries[10] and len(j) == 11
    assert not j.align_to_snapshot((b"other", 15, 9), entries[15])


def test_journal_refuses_a_file_of_another_format(tmp_path: Path) -> None:
    (tmp_path / "raft.log").write_bytes(b"PYSYNCOBJ" + b"\0" * 40)
    with pytest.raises(JournalCorrupt):
        _open(tmp_path)


def test_journal_compaction_keeps_retain_entries_before_the_snapshot_head(tmp_path: Path) -> None:
    j = _open(tmp_path)
    entries = _fill(j, 1, 40)
    j.retain = 5
    j.deleteEntriesTo(30)
    assert list(j[:]) == entries[25:]
    assert j.align_to_snapshot(entries[29], entries[30])  # at load: exactly the snapshot head
    assert list(j[:]) == entries[29:]

"""Snapshot files, the background snapshotter's hand-over to pysyncobj, and the staggered policy."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from sessionquorum.store.snapshots import (
    Progress,
    Snapshot,
    SnapshotCorrupt,
    Snapshotter,
    compaction_due,
    read_snapshot,
    write_snapshot,
)

LAST, PREV = (b"\x01cmd", 11, 2), (b"\x01prev", 10, 2)
WAIT_S = 10.0


class _HeldCapture:
    """A capture whose serialize() waits until the test releases it."""

    def __init__(self, state: bytes) -> None:
        self.release = threading.Event()
        self.state = state

    def serialize(self) -> bytes:
        assert self.release.wait(WAIT_S)
        return self.state


def _pieces(capture: _HeldCapture) -> list[bytes]:
    return [capture.serialize()]


def _wait_done(s: Snapshotter) -> Progress:
    for _ in range(1000):
        progress = s.check()
        if progress is not Progress.RUNNING:
            return progress
        threading.Event().wait(0.01)
    raise AssertionError("snapshot never finished")


def test_snapshot_file_round_trip_keeps_entries_members_and_state(tmp_path: Path) -> None:
    snap = Snapshot(LAST, PREV, ("a:1", "b:2"), b"state" * 1000)
    size = write_snapshot(tmp_path / "s", LAST, PREV, ("a:1", "b:2"), [b"state" * 500, b"state" * 500])
    assert size == (tmp_path / "s").stat().st_size
    assert read_snapshot(tmp_path / "s") == snap


def test_snapshot_file_with_a_flipped_byte_is_refused(tmp_path: Path) -> None:
    write_snapshot(tmp_path / "s", LAST, PREV, (), [b"state" * 100])
    data = bytearray((tmp_path / "s").read_bytes())
    data[-10] ^= 1
    (tmp_path / "s").write_bytes(bytes(data))
    with pytest.raises(SnapshotCorrupt):
        read_snapshot(tmp_path / "s")


def test_snapshotter_reports_running_until_written_then_success_once(tmp_path: Path) -> None:
    capture = _HeldCapture(b"S1")
    s = Snapshotter(tmp_path / "raft.snapshot", lambda: capture, _pieces, lambda data: None)
    assert s.check() is Progress.IDLE
    s.begin(str(tmp_path / "raft.snapshot.tmp"), (LAST, PREV, set()))
    assert s.check() is Progress.RUNNING
    assert not (tmp_path / "raft.snapshot").exists()
    assert not (tmp_path / "raft.snapshot.tmp").exists(), "pysyncobj's rename must find nothing"
    capture.release.set()
    assert _wait_done(s) is Progress.SUCCEEDED
    assert s.check() is Progress.IDLE
    assert read_snapshot(tmp_path / "raft.snapshot").state == b"S1"
    assert (s.snapshot_index, s.snapshots_taken) == (11, 1)


def test_snapshotter_discards_its_snapshot_when_an_install_happened_meanwhile(tmp_path: Path) -> None:
    restored: list[bytes] = []
    capture = _HeldCapture(b"old")
    s = Snapshotter(tmp_path / "raft.snapshot", lambda: capture, _pieces, restored.append)
    s.begin("unused", (LAST, PREV, set()))
    # The leader's newer snapshot arrives (pysyncobj renamed it into place, then loads it).
    write_snapshot(tmp_path / "raft.snapshot", (b"n", 99, 3), (b"m", 98, 3), (), [b"new"])
    s.load(str(tmp_path / "raft.snapshot"), install=True)
    capture.release.set()
    assert _wait_done(s) is Progress.FAILED
    assert restored == [b"new"] and s.snapshots_installed == 1
    assert read_snapshot(tmp_path / "raft.snapshot").state == b"new"


def test_compaction_due_staggers_three_nodes_and_bounds_each_journal() -> None:
    every, members = 300, 3
    journals = [0, 0, 0]
    starts: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for index in range(1, 20_000):
        for rank in range(members):
            journals[rank] += 1
            if compaction_due(
                entries=journals[rank],
                size_bytes=journals[rank] * 100,
                since_snapshot=journals[rank],
                last_applied=index,
                rank=rank,
                members=members,
                every_entries=every,
                max_bytes=10**9,
            ):
                starts[rank].append(index)
                journals[rank] = 1
    assert all(len(v) > 50 for v in starts.values())
    assert max(journals) <= every * 2
    # After the first period, starts at different nodes are a slot apart.
    merged = sorted(i for v in starts.values() for i in v if i > 2 * every)
    assert min(b - a for a, b in itertools.pairwise(merged)) >= every // members - 1


def test_compaction_due_at_max_bytes_whatever_the_slot() -> None:
    kwargs = {"last_applied": 5, "rank": 2, "members": 3, "every_entries": 10**6, "max_bytes": 1000}
    assert compaction_due(entries=10, size_bytes=1000, since_snapshot=10, **kwargs)
    assert not compaction_due(entries=10, size_bytes=100, since_snapshot=10, **kwargs)


def test_compaction_due_counts_entries_since_the_snapshot_not_retained_ones() -> None:
    kwargs = {"size_bytes": 100, "last_applied": 0, "rank": 0, "members": 3, "every_entries": 300}
    assert not compaction_due(entries=200, since_snapshot=100, max_bytes=10**9, **kwargs)
    assert compaction_due(entries=200, since_snapshot=150, max_bytes=10**9, **kwargs)


@pytest.mark.parametrize("with_events", [False, True])
def test_serialize_in_pieces_gives_canonical_msgpack_of_the_whole_state(with_events: bool) -> None:
    import hashlib

    import msgpack

    from sessionquorum.store import snapshot_format as snapshot_stream
    from sessionquorum.store.commands import Command, Create, EnableEvents, encode
    from sessionquorum.store.config import Limits, limits_to_wire
    from sessionquorum.store.dedup import DedupTable
    from sessionquorum.store.secops import tombstone_row
    from sessionquorum.store.state import SessionMachine

    machine = SessionMachine(Limits())
    if with_events:  # a ring smaller than the events, so it has wrapped around
        machine.apply(encode(Command(EnableEvents(100, 1 << 20), now_ms=999)))
    for i in range(300):
        token_hash = hashlib.sha256(str(i).encode()).digest()
        op = Create(token_hash, f"h{i}", "p" if i % 2 else None, (("a", b"x" * i),), 60_000, 3_600_000)
        machine.apply(encode(Command(op, now_ms=1_000 + i, client_id=b"c%d" % (i % 7), sequence=i)))
    capture = machine.capture()
    old_chunk, old_piece = snapshot_stream.SORT_CHUNK, snapshot_stream.PIECE_BYTES
    snapshot_stream.SORT_CHUNK, snapshot_stream.PIECE_BYTES = 7, 1000  # many chunks and pieces
    try:
        pieces = list(snapshot_stream.serialize_in_pieces(capture))
    finally:
        snapshot_stream.SORT_CHUNK, snapshot_stream.PIECE_BYTES = old_chunk, old_piece
    assert len(pieces) > 10
    # What one packb of the logical map gives (the format before it was streamed).
    events = {"events": capture.events} if with_events else {}
    # Any level-5 entry (EnableEvents here) switches the session-security state on.
    sec = capture.secops
    secops = (
        {}
        if sec is None
        else {"secops": [[tombstone_row(h, t) for h, t in sec.tombstones], sec.disabled_rows()]}
    )
    reference = msgpack.packb(
        {
            "format": snapshot_stream.SNAPSHOT_FORMAT
            if with_events
            else snapshot_stream.FORMAT_WITHOUT_EVENTS,
            "now_ms": capture.now_ms,
            "limits": [list(p) for p in limits_to_wire(capture.limits)],
            "configured": capture.configured,
            "members": sorted([k, lv] for k, lv in capture.member_levels.items()),
            "sessions": [
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
                for _, s in sorted(capture.sessions.items())
            ],
            "dedup": DedupTable.to_wire(capture.dedup),
            "forgotten_ms": capture.forgotten_ms,
            **events,
            **secops,
        },
        use_bin_type=True,
    )
    assert b"".join(pieces) == reference == capture.serialize()


def test_snapshotter_reports_a_failed_capture_once_then_idle(tmp_path: Path) -> None:
    def broken() -> object:
        raise RuntimeError("capture failed")

    s = Snapshotter(tmp_path / "raft.snapshot", broken, _pieces, lambda data: None)
    s.begin("unused", (LAST, PREV, set()))
    assert s.check() is Progress.FAILED
    assert s.check() is Progress.IDLE

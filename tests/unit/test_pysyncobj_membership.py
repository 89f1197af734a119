"""Why sessionquorum keeps pysyncobj's `dynamicMembershipChange` off (store/DESIGN.md,
"Membership"): two defects of pysyncobj 0.3.17, shown on a real SyncObj without a tick
thread. Each test asserts the defect is there; if a pysyncobj upgrade fixes one, its test
fails and the section must be revisited.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionquorum.store._readindex import ReadIndex
from sessionquorum.store.raft import SyncObjConf, _GuardedSyncObj  # type: ignore[attr-defined]

PEERS = ["127.0.0.1:2", "127.0.0.1:3"]


@pytest.fixture
def leader(tmp_path: Path) -> Iterator[tuple[_GuardedSyncObj, list[Any]]]:
    """n1 of {n1, n2, n3} just elected, its no-op committed and applied (a change may start)."""
    snapshots: list[Any] = []
    conf = SyncObjConf(
        autoTick=False,
        dynamicMembershipChange=True,
        serializer=lambda _file, data: snapshots.append(data),
        deserializer=lambda _file: None,
        fullDumpFile=str(tmp_path / "dump"),
        useFork=False,
    )
    sync = _GuardedSyncObj(
        "127.0.0.1:1",
        PEERS,
        conf=conf,
        busy_tick_s=0.2,
        pre_vote=None,
        election_min_s=0.4,
        reads=ReadIndex(timeout_s=1.0),
    )
    try:
        sync._SyncObj__onBecomeLeader()
        noop = sync._SyncObj__noopIDx
        for node in sync._SyncObj__otherNodes:
            sync._SyncObj__raftMatchIndex[node] = noop
        sync._SyncObj__raftCommitIndex = noop
        sync._SyncObj__applyLogEntries()
        assert sync._SyncObj__raftLastApplied == noop
        yield sync, snapshots
    finally:
        sync.destroy()


def _members(sync: _GuardedSyncObj) -> list[str]:
    return sorted(str(n.address) for n in sync._SyncObj__otherNodes)


def test_pysyncobj_appends_a_second_membership_change_before_the_first_commits(
    leader: tuple[_GuardedSyncObj, list[Any]],
) -> None:
    # syncobj.py: __changeClusterIDx is set to None (line 186) and never to an index, so the
    # one-change-at-a-time check in __changeCluster (lines 1361-1367) never refuses.
    sync, _ = leader
    refused: list[int] = []
    for peer in ("127.0.0.1:4", "127.0.0.1:5"):
        sync.addNodeToCluster(peer, callback=lambda _r, err: refused.append(err))
        sync._checkCommandsToApply()
    commit, end = sync._SyncObj__raftCommitIndex, sync._SyncObj__getCurrentLogIndex()
    assert end - commit == 2 and refused == []  # both appended, neither committed
    # The leader now counts majorities of 5 (3 votes) while n2 and n3 still count 3 (2):
    # {n2, n3} and {n1, n4, n5} are disjoint majorities of the two configurations.
    assert _members(sync) == [*PEERS, "127.0.0.1:4", "127.0.0.1:5"]


def test_pysyncobj_snapshot_records_a_membership_change_past_its_own_index(
    leader: tuple[_GuardedSyncObj, list[Any]],
) -> None:
    # syncobj.py lines 1469-1470: the members stored with a snapshot are the leader's
    # members now, which include changes appended (not committed) after the snapshot's index.
    sync, snapshots = leader
    sync.removeNodeFromCluster("127.0.0.1:3")
    sync._checkCommandsToApply()
    assert sync._SyncObj__getCurrentLogIndex() > sync._SyncObj__raftLastApplied  # not committed
    sync._SyncObj__forceLogCompaction = True
    sync._SyncObj__tryLogCompaction()
    (last, _prev, members) = snapshots[0]
    assert last[1] == sync._SyncObj__raftLastApplied  # the snapshot ends before the change ...
    assert sorted(str(n.address) for n in members) == ["127.0.0.1:1", "127.0.0.1:2"]  # ... yet has it

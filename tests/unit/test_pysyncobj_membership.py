"""pysyncobj 0.3.17's dynamic membership change, and our fixes (store/_membership.py).

sessionquorum keeps `dynamicMembershipChange` off (store/DESIGN.md, "Membership"). Two
defects of pysyncobj's mechanism are shown on plain pysyncobj (the canaries: if an upgrade
fixes one, its canary fails and the section must be revisited), and fixed in
`_GuardedSyncObj`. Real SyncObjs without a tick thread; the test drives their handlers.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionquorum.store._membership import ChangeGate, members_at
from sessionquorum.store._prevote import REQUEST, PreVote, PreVoteGate, reply_message
from sessionquorum.store._readindex import ReadIndex
from sessionquorum.store.raft import (  # type: ignore[attr-defined]
    SyncObjConf,
    _DurableTransport,
    _GuardedSyncObj,
)
from tests.unit.test_prevote import Clock, FakeSyncObj
from tests.unit.test_prevote import Node as FakeNode

PEERS = ["127.0.0.1:2", "127.0.0.1:3"]
PYSYNCOBJ = _GuardedSyncObj.__mro__[1]  # pysyncobj's SyncObj, without our fixes

Leader = tuple[Any, list[Any]]


@pytest.fixture
def make_leader(tmp_path: Path) -> Iterator[Callable[[bool], Leader]]:
    """n1 of {n1, n2, n3} just elected, its no-op committed and applied (a change may start)."""
    made: list[Any] = []

    def make(fixed: bool) -> Leader:
        snapshots: list[Any] = []
        conf = SyncObjConf(
            autoTick=False,
            dynamicMembershipChange=True,
            serializer=lambda _file, data: snapshots.append(data),
            deserializer=lambda _file: None,
            fullDumpFile=str(tmp_path / f"dump{len(made)}"),
            useFork=False,
        )
        if fixed:
            sync = _GuardedSyncObj(
                "127.0.0.1:1",
                PEERS,
                conf=conf,
                busy_tick_s=0.2,
                pre_vote=None,
                election_min_s=0.4,
                reads=ReadIndex(timeout_s=1.0),
                transportClass=_DurableTransport,
            )
            # What ReplicatedLog's serializer does: the members as of the snapshot's index.
            conf.serializer = lambda _file, data: snapshots.append(
                (data[0], data[1], sync.snapshot_members(int(data[0][1]), data[2]))
            )
            sync._SyncObj__serializer._Serializer__serializer = conf.serializer
        else:
            sync = PYSYNCOBJ("127.0.0.1:1", PEERS, conf=conf)
        made.append(sync)
        sync._SyncObj__onBecomeLeader()
        noop = sync._SyncObj__noopIDx
        for node in sync._SyncObj__otherNodes:
            sync._SyncObj__raftMatchIndex[node] = noop
        sync._SyncObj__raftCommitIndex = noop
        sync._SyncObj__applyLogEntries()
        assert sync._SyncObj__raftLastApplied == noop
        return sync, snapshots

    yield make
    for sync in made:
        sync.destroy()


def _members(sync: Any) -> list[str]:
    return sorted(str(n.address) for n in sync._SyncObj__otherNodes)


def _add_two(sync: Any) -> list[int]:
    errors: list[int] = []
    for peer in ("127.0.0.1:4", "127.0.0.1:5"):
        sync.addNodeToCluster(peer, callback=lambda _r, err: errors.append(err))
        sync._checkCommandsToApply()
    return errors


def test_pysyncobj_appends_a_second_membership_change_before_the_first_commits_canary(
    make_leader: Callable[[bool], Leader],
) -> None:
    # syncobj.py: __changeClusterIDx is set to None (line 186) and never to an index, so the
    # one-change-at-a-time check in __changeCluster (lines 1361-1367) never refuses.
    sync, _ = make_leader(False)
    assert _add_two(sync) == []
    assert sync._SyncObj__getCurrentLogIndex() - sync._SyncObj__raftCommitIndex == 2  # neither committed
    # The leader counts majorities of 5 (3 votes) while n2 and n3 still count 3 (2):
    # {n2, n3} and {n1, n4, n5} are disjoint majorities of the two configurations.
    assert _members(sync) == [*PEERS, "127.0.0.1:4", "127.0.0.1:5"]


def test_second_membership_change_refused_until_the_first_commits(
    make_leader: Callable[[bool], Leader],
) -> None:
    sync, _ = make_leader(True)
    denied = _add_two(sync)
    assert len(denied) == 1 and denied[0] != 0  # REQUEST_DENIED for the second, at once
    assert _members(sync) == [*PEERS, "127.0.0.1:4"]
    sync._SyncObj__raftCommitIndex = sync._SyncObj__getCurrentLogIndex()  # the first commits
    sync.addNodeToCluster("127.0.0.1:5")
    sync._checkCommandsToApply()
    assert _members(sync) == [*PEERS, "127.0.0.1:4", "127.0.0.1:5"]


@pytest.mark.parametrize("fixed", [False, True], ids=["pysyncobj-canary", "fixed"])
def test_snapshot_members_are_those_as_of_its_last_entry(
    make_leader: Callable[[bool], Leader], fixed: bool
) -> None:
    # syncobj.py lines 1469-1470: pysyncobj stores its members NOW with a snapshot, which
    # include changes appended (not committed) after the snapshot's last entry.
    sync, snapshots = make_leader(fixed)
    sync.removeNodeFromCluster("127.0.0.1:3")
    sync._checkCommandsToApply()
    assert sync._SyncObj__getCurrentLogIndex() > sync._SyncObj__raftLastApplied  # not committed
    sync._SyncObj__forceLogCompaction = True
    sync._SyncObj__tryLogCompaction()
    (last, _prev, members) = snapshots[0]
    assert last[1] == sync._SyncObj__raftLastApplied  # the snapshot ends before the change
    expected = ["127.0.0.1:1", *PEERS] if fixed else ["127.0.0.1:1", "127.0.0.1:2"]
    assert sorted(str(n.address) for n in members) == expected


def test_members_at_undoes_later_changes_in_reverse_order() -> None:
    later = [["add", "d", "d"], ["rem", "b", "b"], ["add", "b", "b"]]
    assert members_at({"a", "b", "c", "d"}, later) == {"a", "b", "c"}


def test_change_gate_counts_refusals_and_clears_at_commit() -> None:
    gate = ChangeGate()
    assert gate.may_change(5)
    gate.appended(6)
    assert not gate.may_change(5) and gate.refused == 1
    assert gate.may_change(6)


@pytest.mark.parametrize("fixed", [False, True], ids=["pysyncobj-canary", "fixed"])
def test_restarted_node_uses_the_latest_membership_in_its_log(
    make_leader: Callable[[bool], Leader], fixed: bool
) -> None:
    # syncobj.py lines 885-890: after a restart a change takes effect only when applied;
    # an uncommitted `add n4` in the log's tail is ignored until then.
    sync, _ = make_leader(fixed)
    sync._SyncObj__setState(0)  # a follower again, as after a restart
    index = sync._SyncObj__getCurrentLogIndex() + 1
    change = bytes([2]) + pickle.dumps(["add", "127.0.0.1:4", "127.0.0.1:4"])  # MEMBERSHIP
    sync._SyncObj__raftLog.add(change, index, sync._getTerm())
    if fixed:
        assert sync.apply_tail_changes() == 1
        assert sync.apply_tail_changes() == 0  # and once only
    assert _members(sync) == ([*PEERS, "127.0.0.1:4"] if fixed else PEERS)


def test_raft_port_admits_an_added_member_and_refuses_a_removed_one(
    make_leader: Callable[[bool], Leader],
) -> None:
    sync, _ = make_leader(True)
    guard = sync._SyncObj__transport._sq_guard
    assert guard._allowed == {"127.0.0.1"}
    sync.addNodeToCluster("127.0.0.7:4")
    sync._checkCommandsToApply()
    assert guard._allowed == {"127.0.0.1", "127.0.0.7"}
    sync._SyncObj__raftCommitIndex = sync._SyncObj__getCurrentLogIndex()
    sync.removeNodeFromCluster("127.0.0.7:4")
    sync._checkCommandsToApply()
    assert guard._allowed == {"127.0.0.1"}


def test_pre_vote_counts_majorities_of_the_current_membership() -> None:
    # Built for 3 members; the membership grew to 5: two grants (with its own) are no majority.
    sync, clock = FakeSyncObj(peers=4), Clock(11.0)
    gate = PreVoteGate(sync, PreVote(3, win_valid_s=0.4), min_election_s=0.4, clock=clock)
    gate.before_tick()
    request = next(m for _, m in sync._SyncObj__transport.sent if m["type"] == REQUEST)
    gate.on_message(FakeNode("p0"), reply_message(request, True))
    assert sync._SyncObj__raftElectionDeadline == float("inf")  # not won: 2 of 5
    gate.on_message(FakeNode("p1"), reply_message(request, True))
    assert sync._SyncObj__raftElectionDeadline == 0  # 3 of 5: campaign on the next tick

"""Node identities in the log (MemberIdentity, level 5) and what the node names by them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionquorum.store import commands as c
from sessionquorum.store.config import ClusterConfig, Limits, NodeConfig, NodeSpec
from sessionquorum.store.members import MemberIds, directory, levels_counted, member_ids
from sessionquorum.store.replies import Code
from sessionquorum.store.state import MAX_MEMBERS, SessionMachine


def _identity(node_id: str, raft: str, grpc: str = "127.0.0.1:2", joined: bool = True) -> bytes:
    return c.encode(c.Command(c.MemberIdentity(node_id, raft, grpc, joined), now_ms=1))


def _config() -> NodeConfig:
    nodes = tuple(NodeSpec(f"n{i}", f"127.0.0.1:{100 + i}", f"127.0.0.1:{200 + i}") for i in (1, 2, 3))
    return NodeConfig(ClusterConfig(nodes, Path("pw"), None), nodes[0], Path("d"))


def test_member_identity_is_level_5_and_round_trips_through_the_log() -> None:
    cmd = c.Command(c.MemberIdentity("n4", "10.0.0.4:7000", "10.0.0.4:7001", True), now_ms=5)
    assert c.level_of(cmd) == c.MEMBERSHIP_LEVEL == 5
    assert c.decode(c.encode(cmd)) == cmd
    with pytest.raises(c.UndecodableEntry):  # a level-4 node must stop, not guess
        c.decode(c.encode(cmd), supported_level=4)


def test_identities_are_kept_replaced_by_address_and_dropped_on_leave() -> None:
    m = SessionMachine(Limits())
    assert m.apply(_identity("n4", "127.0.0.1:104")).code is Code.OK
    assert m.apply(_identity("n5", "127.0.0.1:104")).code is Code.OK  # a new node at n4's address
    assert m.nodes == {"n5": ("127.0.0.1:104", "127.0.0.1:2")}
    assert m.apply(_identity("n5", "127.0.0.1:104", joined=False)).code is Code.OK
    assert m.nodes == {}


def test_malformed_identity_is_invalid_and_changes_nothing() -> None:
    m = SessionMachine(Limits())
    assert m.apply(_identity("", "127.0.0.1:1")).code is Code.INVALID
    assert m.apply(_identity("n4", "x" * 300)).code is Code.INVALID
    assert m.nodes == {}


def test_identity_table_is_bounded() -> None:
    m = SessionMachine(Limits())
    for i in range(MAX_MEMBERS):
        assert m.apply(_identity(f"m{i}", f"127.0.0.1:{1000 + i}")).code is Code.OK
    reply = m.apply(_identity("one-more", "127.0.0.1:9"))
    assert reply.code is Code.QUOTA and len(m.nodes) == MAX_MEMBERS


def test_snapshot_carries_identities_and_one_without_them_is_unchanged_bytes() -> None:
    plain = SessionMachine(Limits())
    before = plain.snapshot()
    assert b"nodes" not in before  # states without live members keep their snapshot bytes
    m = SessionMachine(Limits())
    m.apply(_identity("n4", "127.0.0.1:104", "127.0.0.1:204"))
    restored = SessionMachine(Limits())
    restored.restore(m.snapshot())
    assert restored.nodes == {"n4": ("127.0.0.1:104", "127.0.0.1:204")}
    assert restored.digest() == m.digest()
    restored.restore(before)  # a snapshot from before live membership: no identities
    assert restored.nodes == {}


def test_the_log_names_a_member_the_file_does_not_and_wins_for_the_same_address() -> None:
    names = directory(_config(), {"n4": ("127.0.0.1:104", "127.0.0.1:204"), "x3": ("127.0.0.1:103", "g")})
    assert names["127.0.0.1:104"].grpc_address == "127.0.0.1:204"
    assert names["127.0.0.1:103"].node_id == "x3"
    assert member_ids(names, ["127.0.0.1:101", "127.0.0.1:104", "127.0.0.1:999"]) == [
        "127.0.0.1:999",
        "n1",
        "n4",
    ]


def test_command_level_counts_file_members_always_and_live_ones_once_advertised() -> None:
    config = _config()
    assert levels_counted(config, ["n1", "n2", "n4"], {"n1": 5}, {}) == ["n1", "n2"]
    assert levels_counted(config, ["n1", "n2", "n4"], {"n4": 5}, {}) == ["n1", "n2", "n4"]
    # n3 was added live (identity in the log) and is in this node's file: silent, not counted.
    assert levels_counted(config, ["n1", "n3"], {"n1": 5}, {"n3": ("a", "b")}) == ["n1"]
    m = SessionMachine(Limits())
    for node in ("n1", "n2", "n3"):
        m.apply(c.encode(c.Command(c.MemberLevel(node, 5), now_ms=1)))
    # n3 removed, n4 joining and silent: the level stays 5; a lease would count n4 as 1.
    assert m.lowest_level(levels_counted(config, ["n1", "n2", "n4"], m.member_levels, m.nodes)) == 5
    assert m.lowest_level(["n1", "n2", "n4"]) == c.BASE_LEVEL


def test_memoized_member_ids_follow_every_change_of_the_membership_and_of_the_identities() -> None:
    config = _config()
    memo = MemberIds(config)
    three = ("127.0.0.1:101", "127.0.0.1:102", "127.0.0.1:103")
    cases = [
        ({}, three),
        ({}, three),  # asked again: the same answer
        ({}, (*three, "127.0.0.1:104")),  # a member added, not named yet: by its address
        ({"n4": ("127.0.0.1:104", "127.0.0.1:204")}, (*three, "127.0.0.1:104")),  # named by the log
        ({"n4": ("127.0.0.1:104", "127.0.0.1:204")}, (*three[:2], "127.0.0.1:104")),  # n3 removed
        ({"n9": ("127.0.0.1:101", "127.0.0.1:201")}, three),  # the log renames n1's address
    ]
    for nodes, addresses in cases:
        assert list(memo.of(nodes, addresses)) == member_ids(directory(config, nodes), addresses)

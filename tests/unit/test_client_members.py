"""The client's member list follows the cluster's (live membership)."""

from __future__ import annotations

from sessionquorum.client._routing import MAX_ENDPOINTS, Router


def test_replacing_members_drops_removed_nodes_takes_new_ones_and_keeps_a_surviving_leader() -> None:
    router = Router(["a:1", "b:1", "c:1"])
    router.confirm("b:1")
    router.replace_members(["b:1", "c:1", "d:1"])
    assert router.endpoints == ("b:1", "c:1", "d:1") and router.leader() == "b:1"
    router.replace_members(["c:1", "d:1"])  # the leader went: the guess moves to a member
    assert router.leader() == "c:1"
    assert {router.spread() for _ in range(4)} == {"c:1", "d:1"}


def test_an_empty_answer_keeps_the_list_and_a_huge_one_is_bounded() -> None:
    router = Router(["a:1"])
    router.replace_members([])
    assert router.endpoints == ("a:1",)
    router.replace_members([f"h{i}:1" for i in range(MAX_ENDPOINTS + 10)])
    assert len(router.endpoints) == MAX_ENDPOINTS

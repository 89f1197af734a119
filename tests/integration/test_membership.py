"""Live membership on real nodes under client load, every history checked.

The chaos framework's run (tests/chaos/framework) with the `membership` nemesis: each
injection is one complete MemberAdd (a new node, started, added) or MemberRemove (any
member, every other time the leader itself, which hands over first), so the cluster goes
3 -> 4 -> 5 -> 4 -> 3. The workers' register, counter and lifecycle histories are checked
for linearizability and lost writes, every node must converge, and the report carries the
longest write gap.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from sessionquorum.cluster import LocalCluster
from tests.chaos.framework._chaos import Scenario, run_scenario

from .conftest import ClientFactory, ClusterFactory
from .helpers import pb, stub, wait_converged

pytestmark = pytest.mark.cluster


def _check(report: dict[str, Any], changes_at_least: int) -> list[str]:
    anomalies = report["extra"]["anomalies"]
    assert not anomalies, "\n".join(anomalies[:20])
    details = [f["detail"] for f in report["faults"]]
    done = [d for d in details if "refused" not in d]
    assert len(done) >= changes_at_least, details
    assert report["counts"]["by_outcome"]["ok"] > 0
    print("membership changes:", details)
    print("longest write gap:", report["write_gap"])
    print("operations by outcome:", report["counts"]["by_outcome"])
    return done


def test_three_to_four_and_back_under_load_loses_nothing_and_stays_linearizable(tmp_path: Path) -> None:
    scenario = Scenario("membership", "membership", duration_s=9.0, quiet_s=0.5, fault_s=0.5)
    done = _check(
        run_scenario(scenario, random.SystemRandom().randrange(2**31), tmp_path), changes_at_least=2
    )
    assert done[0].startswith("added n4"), done
    assert any(d.startswith("removed") for d in done) or len(done) < 3, done


def test_leader_killed_while_adding_a_node_loses_nothing_and_the_add_completes(tmp_path: Path) -> None:
    scenario = Scenario(
        "membership-kill-leader", "membership-kill-leader", duration_s=8.0, quiet_s=0.5, fault_s=1.0
    )
    report = run_scenario(scenario, random.SystemRandom().randrange(2**31), tmp_path)
    _check(report, changes_at_least=2)


def test_a_member_restarted_with_its_file_from_before_the_add_takes_the_members_from_its_log(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    # Small snapshots: the membership travels in several of them before the restart.
    cluster = make_cluster(3, overrides={"raft": {"compaction_entries": 16}})
    before = cluster.config_path.read_text()
    added, _ = cluster.grow()
    client = make_client(cluster)
    for i in range(80):
        client.create(attributes={"i": str(i).encode()})
    wait_converged(cluster)
    follower = next(n for n in ("n1", "n2", "n3") if n != cluster.wait_for_leader())
    status = cluster.status(follower)
    assert status is not None and status.snapshots_taken >= 1
    cluster.kill(follower)
    grown = cluster.config_path.read_text()
    cluster.config_path.write_text(before)  # its file names n1..n3 only
    try:
        cluster.start_node(follower)
        cluster.wait_until(lambda: cluster.status(follower) is not None, 30.0, f"{follower} to answer")
    finally:
        cluster.config_path.write_text(grown)
    wait_converged(cluster)
    for node in (follower, added):  # the new node installed a snapshot: its members too
        view = _own_members(cluster, node)
        named = {m.node_id: m.grpc_address for m in view.members}
        assert named == {n: cluster.grpc_address(n) for n in ("n1", "n2", "n3", added)}, view
        assert len(view.members) == 4, view  # itself once: not also as a peer


def _own_members(cluster: LocalCluster, node: str) -> pb.MemberListResponse:
    raw, channel = stub(cluster, node)
    try:
        reply: pb.MemberListResponse = raw.MemberList(pb.MemberListRequest(), timeout=10)
        return reply
    finally:
        channel.close()

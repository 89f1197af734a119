"""Leadership transfer on real nodes under client load, every history checked.

The chaos framework's run (tests/chaos/framework) with the `leader-transfer` nemesis: the
workers' register, counter and lifecycle histories are checked for linearizability and
lost writes, every node must converge, and the report carries the longest write gap.
"""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest

from sessionquorum.cluster import LocalCluster
from sessionquorum.cluster._cli import main as cli_main
from tests.chaos.framework._chaos import Scenario, run_scenario

from .conftest import ClientFactory, ClusterFactory
from .helpers import pb, stub

pytestmark = pytest.mark.cluster


def _check(report: dict[str, Any], transfers_at_least: int) -> None:
    anomalies = report["extra"]["anomalies"]
    assert not anomalies, "\n".join(anomalies[:20])
    done = [f for f in report["faults"] if "refused" not in f["detail"] and "-> ?" not in f["detail"]]
    assert len(done) >= transfers_at_least, [f["detail"] for f in report["faults"]]
    assert report["counts"]["by_outcome"]["ok"] > 0
    for fault in done:  # a named target is the one that took over
        asked = fault["detail"].split("(asked ")[1].split(")")[0]
        assert asked == "any" or f"-> {asked} " in fault["detail"], fault["detail"]
    print("transfers:", [f["detail"] for f in report["faults"]])
    print("longest write gap:", report["write_gap"])
    print("operations by outcome:", report["counts"]["by_outcome"])


def test_transfers_under_load_on_three_nodes_lose_nothing_and_stay_linearizable(tmp_path: Path) -> None:
    scenario = Scenario("leader-transfer", "leader-transfer", duration_s=10.0, quiet_s=1.0, fault_s=0.5)
    _check(run_scenario(scenario, random.SystemRandom().randrange(2**31), tmp_path), transfers_at_least=3)


@pytest.mark.slow
def test_transfers_under_load_on_five_nodes_lose_nothing_and_stay_linearizable(tmp_path: Path) -> None:
    # Five nodes: the old leader's vote is not enough, the followers must honour the flag.
    scenario = Scenario(
        "leader-transfer-5", "leader-transfer", nodes=5, duration_s=20.0, quiet_s=1.0, fault_s=1.0
    )
    _check(run_scenario(scenario, random.SystemRandom().randrange(2**31), tmp_path), transfers_at_least=5)


def _transfer(cluster: LocalCluster, node: str, to: str = "") -> pb.LeaderTransferResponse:
    raw, channel = stub(cluster, node)
    try:
        reply: pb.LeaderTransferResponse = raw.LeaderTransfer(
            pb.LeaderTransferRequest(to_node_id=to), timeout=10
        )
        return reply
    finally:
        channel.close()


def test_transfer_to_a_named_follower_of_five_makes_it_leader(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(5)
    old = cluster.wait_for_leader()
    target = sorted(n for n in cluster.node_ids if n != old)[-1]
    reply = _transfer(cluster, old, target)
    assert reply.leader_node_id == target, reply
    assert cluster.wait_for_leader() == target
    # The followers voted although they had just heard from the old leader: the flag did it.
    lines = "".join(cluster.log_path(n).read_text(errors="replace") for n in cluster.node_ids)
    assert "lease ended, timeout_now to" in lines


def test_cli_leader_transfer_moves_leadership_and_says_where_as_json(
    make_cluster: ClusterFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = make_cluster(3)
    old = cluster.wait_for_leader()
    target = sorted(n for n in cluster.node_ids if n != old)[0]
    d = ["--data-dir", str(cluster.data_dir)]
    assert cli_main(["leader", "transfer", "--to", target, "--json", *d]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["from"] == old and out["to"] == target and out["seconds"] < 2.0
    assert cluster.wait_for_leader() == target
    assert cli_main(["leader", "transfer", "--to", "n9", "--json", *d]) == 2  # not a member
    assert "n9" in json.loads(capsys.readouterr().out.splitlines()[0])["error"]


def test_leader_asked_to_stop_hands_over_before_it_goes(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    old = cluster.wait_for_leader()
    pid, before = cluster.pid(old), cluster.status(old)
    assert pid is not None and before is not None
    os.kill(pid, signal.SIGTERM)  # what `sessionquorum down` and a service manager send
    new = cluster.wait_for_new_leader(old)
    cluster.wait_until(lambda: cluster.pid(old) is None, 30.0, f"{old} to exit")
    log = cluster.log_path(old).read_text(errors="replace")
    assert "lease ended, timeout_now to" in log and "handed leadership over to" in log, log[-3000:]
    after = cluster.status(new)
    assert after is not None and after.term == before.term + 1  # one election: the handed-over one


def test_cli_member_list_shows_every_member_caught_up_from_the_leader(
    make_cluster: ClusterFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    assert cli_main(["member", "list", "--json", "--data-dir", str(cluster.data_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in out["members"]] == ["n1", "n2", "n3"]
    assert [m["id"] for m in out["members"] if m["leader"]] == [leader] == [out["answered_by"]]
    assert all(m["connected"] and m["match_index"] >= 1 for m in out["members"])
    assert {m["grpc"] for m in out["members"]} == set(cluster.endpoints)
    # A follower asked for the leader's view redirects (what a client routes by).
    follower = next(n for n in cluster.node_ids if n != leader)
    raw, channel = stub(cluster, follower)
    try:
        with pytest.raises(grpc.RpcError) as info:
            raw.MemberList(pb.MemberListRequest(leader_only=True), timeout=10)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        own = raw.MemberList(pb.MemberListRequest(), timeout=10)
        assert own.answered_by == follower and not own.from_leader and len(own.members) == 3
    finally:
        channel.close()


def test_transfer_to_a_paused_follower_fails_and_the_old_leader_goes_on_taking_writes(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    old = cluster.wait_for_leader()
    target = sorted(n for n in cluster.node_ids if n != old)[0]
    client = make_client(cluster)
    client.create(principal="before")
    cluster.pause(target)
    try:
        raw, channel = stub(cluster, old)
        try:
            with pytest.raises(grpc.RpcError) as info:
                raw.LeaderTransfer(pb.LeaderTransferRequest(to_node_id=target, timeout_s=1.0), timeout=10)
        finally:
            channel.close()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
        assert "leadership transfer failed" in (info.value.details() or "")
        client.create(principal="during")  # proposals are no longer held
        assert cluster.leader_id() == old
    finally:
        cluster.resume(target)

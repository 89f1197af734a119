"""Status, leader and the CLI against fake nodes: real processes serving Status over mutual TLS.

A fake node loads the generated cluster.json, serves SessionStore.Status on its gRPC address
with its own certificate, requires the client certificate, and says n1 leads. That proves the
PKI, the channel settings and the CLI end to end without the real node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sessionquorum.cluster import ClusterView, LocalCluster
from sessionquorum.cluster._cli import main
from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

FAKE_NODE = """
import signal, sys, threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import grpc
from sessionquorum.proto import sessionquorum_pb2 as pb, sessionquorum_pb2_grpc as pb_grpc
from sessionquorum.store.config import load_cluster_config

config, node_id = load_cluster_config(Path(sys.argv[1])), sys.argv[2]
me, leader = config.node(node_id), config.nodes[0]

class Servicer(pb_grpc.SessionStoreServicer):
    def Status(self, request, context):
        return pb.StatusResponse(node_id=node_id, is_leader=me == leader, leader_address=leader.grpc_address,
                                 ready=True, accepting_writes=True, term=7, commit_index=11,
                                 last_applied=10, session_count=3)

server = grpc.server(ThreadPoolExecutor(2))
pb_grpc.add_SessionStoreServicer_to_server(Servicer(), server)
credentials = grpc.ssl_server_credentials([(me.tls_key.read_bytes(), me.tls_cert.read_bytes())],
                                          root_certificates=config.tls_ca.read_bytes(),
                                          require_client_auth=True)
server.add_secure_port(me.grpc_address, credentials)
stopping = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stopping.set())
server.start()
print(node_id, "serving", flush=True)
while not stopping.wait(0.05):
    pass
server.stop(0).wait()
"""


def fake_node(config: Path, node_id: str, data_dir: Path) -> list[str]:
    return [sys.executable, "-c", FAKE_NODE, str(config), node_id, "sessionquorum.store", str(data_dir)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "c", 3, node_command=fake_node) as running:
        running.start()
        yield running


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """For tests that only look: one cluster saves a start per test."""
    with LocalCluster(tmp_path_factory.mktemp("shared"), 3, node_command=fake_node) as running:
        running.start()
        yield running


def test_status_over_mutual_tls_returns_node_view(shared: LocalCluster) -> None:
    cluster = shared
    cluster.wait_until(lambda: cluster.status("n2"), 20.0, "n2 to answer")

    status = cluster.status("n2")

    assert status is not None
    assert (status.node_id, status.is_leader, status.term, status.session_count) == ("n2", False, 7, 3)
    assert status.leader_address == cluster.grpc_address("n1")


def test_wait_for_leader_finds_agreed_leader(shared: LocalCluster) -> None:
    assert shared.wait_for_leader(timeout_s=20.0) == "n1"


def test_channel_with_client_cert_serves_and_without_is_refused(shared: LocalCluster) -> None:
    # A leader needs two nodes only: n3 may still be starting (seen once in CI: refused).
    shared.wait_until(lambda: shared.status("n3"), 20.0, "n3 to answer")
    with shared.channel("n3") as channel:
        reply = pb_grpc.SessionStoreStub(channel).Status(pb.StatusRequest(), timeout=5.0)
        assert reply.node_id == "n3"

    anonymous = grpc.ssl_channel_credentials(root_certificates=shared.tls_files.ca.read_bytes())
    with grpc.secure_channel(shared.grpc_address("n1"), anonymous) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.SessionStoreStub(channel).Status(pb.StatusRequest(), timeout=5.0)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_killed_and_paused_nodes_report_none_and_leader_survives(cluster: LocalCluster) -> None:
    cluster.wait_for_leader(timeout_s=20.0)

    cluster.kill("n3")
    cluster.pause("n2")
    assert cluster.statuses(timeout_s=0.3) == {"n1": cluster.status("n1"), "n2": None, "n3": None}
    assert cluster.leader_id() is None  # n1 alone is no quorum

    cluster.resume("n2")
    assert cluster.wait_for_leader(timeout_s=20.0) == "n1"
    assert cluster.stop() == {"n1": 0, "n2": 0}


def _reap_all(pids: list[int]) -> None:
    """Detached nodes stay this test process's children; collect them once they are gone."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def test_cli_up_detach_status_actions_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "c")

    assert main(["up", "--detach", "--data-dir", data, "--timeout", "20"], node_command=fake_node) == 0
    out = capsys.readouterr().out
    assert "created 3-node cluster" in out and "leader: n1" in out
    assert "TLSConfig.from_files(" in out and "client.key" in out
    view = ClusterView(Path(data))
    pids = [int(view.pid_path(n).read_text()) for n in view.node_ids]

    assert main(["status", "--data-dir", data]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:8] == ["node", "pid", "alive", "leader", "term", "commit", "applied", "sessions"]
    assert table[1].split()[2:8] == ["yes", "yes", "7", "11", "10", "3"]
    assert table[-1] == "agreed leader: n1"

    assert main(["pause", "n2", "--data-dir", data]) == 0
    assert main(["resume", "n2", "--data-dir", data]) == 0
    assert main(["kill", "n3", "--data-dir", data]) == 0
    assert main(["restart", "n3", "--data-dir", data], node_command=fake_node) == 0
    pids.append(int(view.pid_path("n3").read_text()))
    assert view.wait_for_leader(timeout_s=20.0) == "n1"
    assert view.wait_until(lambda: view.status("n3"), 20.0, "n3 to answer again")
    view.close_channels()
    capsys.readouterr()

    assert main(["down", "--data-dir", data]) == 0
    assert capsys.readouterr().out.strip() == "n1: stopped, n2: stopped, n3: stopped"
    _reap_all(pids)
    assert main(["down", "--data-dir", data]) == 0
    assert capsys.readouterr().out.strip() == "no node was running"


def test_cli_up_foreground_reports_dead_node_and_stops_on_sigint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "c"
    view = ClusterView(data)
    failures: list[BaseException] = []
    up_returned = threading.Event()

    def operator() -> None:
        # Waits on conditions only: the leader, then n3's pid file gone (reaped by `up`).
        try:
            view.wait_until(lambda: (data / "cluster.json").exists(), 20.0, "the cluster dir")
            view.wait_for_leader(timeout_s=20.0)
            os.kill(int(view.pid_path("n3").read_text()), signal.SIGKILL)
            view.wait_until(lambda: not view.pid_path("n3").exists(), 20.0, "up to reap n3")
        except BaseException as exc:
            failures.append(exc)
        finally:
            view.close_channels()
            if not up_returned.is_set():  # else nothing would catch the SIGINT
                os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=operator)
    thread.start()
    try:
        code = main(["up", "--data-dir", str(data), "--timeout", "20"], node_command=fake_node)
    finally:
        up_returned.set()
        thread.join()

    assert failures == []
    assert code == 0
    captured = capsys.readouterr()
    assert "node n3 exited unexpectedly (killed by SIGKILL)" in captured.err
    assert captured.out.rstrip().endswith("n1: exit 0, n2: exit 0")
    assert not any(view.pid_path(n).exists() for n in view.node_ids)


def test_cli_json_up_status_kill_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "c")

    assert (
        main(["up", "--detach", "--json", "--data-dir", data, "--timeout", "20"], node_command=fake_node) == 0
    )
    captured = capsys.readouterr()
    (up,) = [json.loads(line) for line in captured.out.splitlines()]
    assert "created 3-node cluster" in captured.err  # notes for people go to stderr
    pids = [n["pid"] for n in up["nodes"]]
    assert up["leader"] == "n1" and all(isinstance(p, int) for p in pids)
    assert up["tls"]["key"].endswith("client.key")
    try:
        assert main(["status", "--json", "--data-dir", data]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["agreed_leader"] == "n1"
        assert status["nodes"][0] | {"grpc": None} == {
            "id": "n1", "pid": pids[0], "alive": "yes", "grpc": None, "answers": True, "leader": True,
            "term": 7, "commit_index": 11, "last_applied": 10, "sessions": 3,
        }  # fmt: skip
        assert main(["kill", "n3", "--json", "--data-dir", data]) == 0
        assert json.loads(capsys.readouterr().out) == {"node": "n3", "action": "killed", "pid": pids[2]}
    finally:
        assert main(["down", "--json", "--data-dir", data]) == 0
        _reap_all(pids)
    assert json.loads(capsys.readouterr().out) == {"stopped": {"n1": "stopped", "n2": "stopped"}}

"""LocalCluster's process management, with stand-in node commands instead of the real node."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sessionquorum.cluster import ClusterError, ClusterTimeout, LocalCluster, NodeCommand

# Stand-in nodes. argv as seen by the script: ["-c", "sessionquorum.store", <node dir>, <node id>];
# the marker and the node dir must be arguments, as with the real node, so pid files verify.
# What they print is split in the source, so the log's launcher line (which quotes the
# command) never matches what a test waits for.
SLEEPER = "import sys, time; print(sys.argv[3], 'is', 'up', file=sys.stderr); time.sleep(60)"
STUBBORN = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ignoring', 'SIGTERM', flush=True); time.sleep(60)"
)

ClusterFactory = Callable[..., LocalCluster]


def _stand_in(script: str) -> Callable[[Path, str, Path], list[str]]:
    def command(config: Path, node_id: str, data_dir: Path) -> list[str]:
        return [sys.executable, "-c", script, "sessionquorum.store", str(data_dir), node_id]

    return command


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[ClusterFactory]:
    made: list[LocalCluster] = []

    def make(nodes: int = 3, script: str = SLEEPER, command: NodeCommand | None = None) -> LocalCluster:
        cluster = LocalCluster(tmp_path / "cluster", nodes, node_command=command or _stand_in(script))
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop(timeout_s=1.0)


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None


def _every_log_says(cluster: LocalCluster, text: str) -> Callable[[], bool]:
    """`text` may contain {node}, replaced by each node's id."""
    return lambda: all(text.format(node=n) in cluster.log_tail(n) for n in cluster.node_ids)


def test_start_runs_every_node_with_pid_file_and_log(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    cluster.start()

    pids = {n: cluster.pid(n) for n in cluster.node_ids}
    assert all(pid is not None for pid in pids.values())
    for node_id, pid in pids.items():
        assert cluster.pid_path(node_id).read_text().strip() == str(pid)
    cluster.wait_until(_every_log_says(cluster, "{node} is up"), 10.0, "every stand-in to log")
    assert "launcher: starting n2" in cluster.log_tail("n2")
    assert "n2 is up" in cluster.log_tail("n2")


def test_kill_one_node_leaves_others_and_restart_gets_new_pid(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    cluster.start()
    old = cluster.pid("n1")
    others = (cluster.pid("n2"), cluster.pid("n3"))

    cluster.kill("n1")

    assert cluster.pid("n1") is None
    assert old is not None and _state(old) is None  # reaped: no zombie left behind
    assert not cluster.pid_path("n1").exists()
    assert (cluster.pid("n2"), cluster.pid("n3")) == others
    new = cluster.restart("n1")
    assert new != old
    assert cluster.pid("n1") == new
    assert cluster.log_tail("n1").count("launcher: starting n1") == 2


def test_restart_running_node_replaces_process(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    cluster.start()
    old = cluster.pid("n3")

    new = cluster.restart("n3")

    assert new != old and cluster.pid("n3") == new


def test_pause_stops_process_and_resume_continues_it(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    cluster.start()
    pid = cluster.pid("n2")
    assert pid is not None

    cluster.pause("n2")
    assert _state(pid) == "T"
    assert cluster.pid("n2") == pid  # a paused node still counts as running

    cluster.resume("n2")
    assert _state(pid) in ("S", "R")


def test_stop_leaves_no_child_running(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    cluster.start()
    pids = [cluster.pid(n) for n in cluster.node_ids]

    codes = cluster.stop()

    assert codes == {n: -signal.SIGTERM for n in cluster.node_ids}
    assert all(pid is not None and _state(pid) is None for pid in pids)
    assert all(not cluster.pid_path(n).exists() for n in cluster.node_ids)
    assert all(cluster.pid(n) is None for n in cluster.node_ids)


def test_stop_paused_node_still_gets_sigterm(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    cluster.start()
    cluster.pause("n1")

    codes = cluster.stop(timeout_s=5.0)

    assert codes["n1"] == -signal.SIGTERM


def test_stop_node_ignoring_sigterm_is_killed(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(script=STUBBORN)
    cluster.start()
    cluster.wait_until(_every_log_says(cluster, "ignoring SIGTERM"), 10.0, "handlers installed")

    codes = cluster.stop(timeout_s=0.2)

    assert codes == {n: -signal.SIGKILL for n in cluster.node_ids}


def test_start_while_running_refused(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    cluster.start()

    with pytest.raises(ClusterError, match="already running"):
        cluster.start()
    with pytest.raises(ClusterError, match="n1 is already running"):
        cluster.start_node("n1")


def test_kill_stopped_node_refused(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    cluster.prepare()

    with pytest.raises(ClusterError, match="n1 is not running"):
        cluster.kill("n1")
    with pytest.raises(ClusterError, match="n1 is not running"):
        cluster.pause("n1")
    with pytest.raises(ClusterError, match="unknown node 'n9'"):
        cluster.start_node("n9")


def test_reap_reports_node_that_died(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(script="import sys; sys.exit(3)")
    cluster.start()

    exited: dict[str, int] = {}

    def all_reaped() -> bool:
        exited.update(cluster.reap())
        return len(exited) == 3

    cluster.wait_until(all_reaped, 10.0, "every node to exit")

    assert exited == {"n1": 3, "n2": 3, "n3": 3}
    assert cluster.reap() == {}
    assert all(not cluster.pid_path(n).exists() for n in cluster.node_ids)


def test_second_launcher_finds_and_kills_nodes_through_pid_files(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    first = make_cluster()
    first.start()
    pid = first.pid("n2")

    second = LocalCluster.open(tmp_path / "cluster")
    assert second.pid("n2") == pid
    second.kill("n2")
    second.pause("n3")
    second.resume("n3")
    codes = second.down(timeout_s=2.0)

    assert codes == {"n1": None, "n3": None}
    assert first.stop() == {"n1": -signal.SIGTERM, "n2": -signal.SIGKILL, "n3": -signal.SIGTERM}


def test_detached_nodes_are_stopped_by_down(make_cluster: ClusterFactory, tmp_path: Path) -> None:
    first = make_cluster()
    first.start()
    pids = first.detach()
    assert sorted(pids) == ["n1", "n2", "n3"]
    assert first.stop() == {}  # no longer ours

    codes = LocalCluster.open(tmp_path / "cluster").down(timeout_s=2.0)

    assert codes == {"n1": None, "n2": None, "n3": None}
    for pid in pids.values():
        assert _state(pid) in (None, "Z")
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # they are still this test process's children


def test_pid_file_naming_another_process_is_never_trusted(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    cluster.prepare()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as stranger:
        try:
            cluster.pid_path("n1").write_text(f"{stranger.pid}\n")

            assert cluster.pid("n1") is None
            assert cluster.down(timeout_s=0.2) == {}
            assert stranger.poll() is None
        finally:
            stranger.kill()


def test_wait_until_timeout_message_has_every_log_tail(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    cluster.start()
    cluster.wait_until(_every_log_says(cluster, "{node} is up"), 10.0, "every stand-in to log")

    with pytest.raises(ClusterTimeout) as caught:
        cluster.wait_until(lambda: None, 0.1, "the impossible")

    message = str(caught.value)
    assert "waiting for the impossible" in message
    for node_id in ("n1", "n2", "n3"):
        assert f"{node_id} is up" in message
        assert f"{node_id} is up" in caught.value.log_tails[node_id]


def test_context_manager_stops_nodes(make_cluster: ClusterFactory, tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "cluster", node_command=_stand_in(SLEEPER)) as cluster:
        cluster.start()
        pids = [cluster.pid(n) for n in cluster.node_ids]

    assert all(pid is not None and _state(pid) is None for pid in pids)


def test_node_command_without_marker_refused(
    make_cluster: ClusterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sessionquorum.cluster._local.EXEC_TIMEOUT_S", 0.2)
    cluster = make_cluster(
        command=lambda config, node_id, data_dir: [sys.executable, "-c", SLEEPER, "x", "y", "z"]
    )

    with pytest.raises(ClusterError, match=r"must have 'sessionquorum\.store' and .* among its arguments"):
        cluster.start()

    assert all(cluster.pid(n) is None for n in cluster.node_ids)
    assert all(not cluster.pid_path(n).exists() for n in cluster.node_ids)


def test_forgotten_cluster_stops_its_nodes_when_collected(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = LocalCluster(tmp_path / "forgotten", node_command=_stand_in(SLEEPER))
    cluster.start()
    pids = [cluster.pid(n) for n in cluster.node_ids]

    del cluster
    gc.collect()

    assert all(pid is not None and _state(pid) is None for pid in pids)

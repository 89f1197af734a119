"""Who leads (a pure rule), and CLI mistakes that need no node (public names: test_cluster_package)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import sessionquorum.cluster as cluster_pkg
from sessionquorum.cluster import agreed_leader
from sessionquorum.cluster._cli import main
from sessionquorum.proto import sessionquorum_pb2 as pb

ADDRESSES = {f"n{i}": f"127.0.0.1:{5000 + i}" for i in range(1, 6)}


def _status(node_id: str, leader: str = "", is_leader: bool = False) -> pb.StatusResponse:
    return pb.StatusResponse(node_id=node_id, is_leader=is_leader, leader_address=ADDRESSES.get(leader, ""))


def _addresses(n: int) -> dict[str, str]:
    return {k: v for k, v in ADDRESSES.items() if int(k[1:]) <= n}


def test_agreed_leader_followers_agree_returns_leader() -> None:
    statuses = {"n1": _status("n1", "n2"), "n2": _status("n2", "n2", True), "n3": _status("n3", "n2")}

    assert agreed_leader(statuses, _addresses(3)) == "n2"


def test_agreed_leader_leader_without_own_address_still_counts_itself() -> None:
    statuses = {"n1": _status("n1", is_leader=True), "n2": _status("n2", "n1"), "n3": None}

    assert agreed_leader(statuses, _addresses(3)) == "n1"


def test_agreed_leader_stale_old_leader_loses_to_agreed_one() -> None:
    statuses = {
        "n1": _status("n1", "n1", True),  # isolated old leader, still believes it
        "n2": _status("n2", "n3"),
        "n3": _status("n3", "n3", True),
    }

    assert agreed_leader(statuses, _addresses(3)) == "n3"


def test_agreed_leader_no_quorum_of_cluster_returns_none() -> None:
    statuses = {"n1": _status("n1", "n1", True), "n2": None, "n3": None}

    assert agreed_leader(statuses, _addresses(3)) is None


def test_agreed_leader_followers_not_caught_up_returns_none() -> None:
    statuses = {f"n{i}": _status(f"n{i}") for i in range(2, 6)} | {"n1": _status("n1", "n1", True)}
    statuses["n2"] = _status("n2", "n1")

    assert agreed_leader(statuses, _addresses(5)) is None  # 2 of 5 agree


def test_agreed_leader_nobody_answers_returns_none() -> None:
    assert agreed_leader(dict.fromkeys(_addresses(3)), _addresses(3)) is None


def test_cli_no_cluster_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--data-dir", str(tmp_path / "none")]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "error: no cluster in" in err


def test_cli_wrong_node_count_and_unknown_node_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster_pkg.prepare_cluster_dir(tmp_path, 3)

    assert main(["up", "--nodes", "5", "--data-dir", str(tmp_path)]) == 2
    assert "holds a 3-node cluster, not 5" in capsys.readouterr().err
    assert main(["kill", "n7", "--data-dir", str(tmp_path)]) == 2
    assert "unknown node 'n7'" in capsys.readouterr().err
    assert main(["pause", "n1", "--data-dir", str(tmp_path)]) == 2
    assert "n1 is not running" in capsys.readouterr().err


def test_cli_as_module_node_without_config_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sessionquorum.cluster",
            "node",
            "run",
            "--config",
            str(tmp_path / "x.json"),
            "--node",
            "n1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"error: no cluster config at {tmp_path / 'x.json'}")
    assert "Traceback" not in result.stderr


def test_cli_up_without_leader_exit_1_with_log_tails_and_nodes_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def crashing(config: Path, node_id: str, data_dir: Path) -> list[str]:
        script = "import sys; print(sys.argv[1], 'cannot', 'start', file=sys.stderr); sys.exit(3)"
        return [sys.executable, "-c", script, node_id, "sessionquorum.store", str(data_dir)]

    code = main(["up", "--data-dir", str(tmp_path), "--timeout", "0.5"], node_command=crashing)

    assert code == 1
    captured = capsys.readouterr()
    assert "timed out after 0.5s waiting for a leader" in captured.err
    assert all(f"n{i} cannot start" in captured.err for i in (1, 2, 3))
    assert captured.out.rstrip().endswith("n1: exit 3, n2: exit 3, n3: exit 3")
    assert not any((tmp_path / f"n{i}" / "node.pid").exists() for i in (1, 2, 3))


def test_cli_node_execs_node_command_with_config_and_default_data_dir(tmp_path: Path) -> None:
    cluster_pkg.prepare_cluster_dir(tmp_path, 3)
    config = tmp_path / "cluster.json"
    launcher = (
        "import sys; from sessionquorum.cluster._cli import main; "
        "main(sys.argv[1:], node_command=lambda c, n, d: "
        "[sys.executable, '-c', 'import sys; print(*sys.argv[1:])', str(c), n, str(d)])"
    )

    result = subprocess.run(
        [sys.executable, "-c", launcher, "node", "run", "--config", str(config), "--node", "n2"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(config), "n2", str(tmp_path.resolve() / "n2")]

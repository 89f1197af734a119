"""What an operator watches: `status --watch SECONDS`, and `node run --log-format json`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from sessionquorum.cluster import _cli_local as cli_local
from sessionquorum.cluster import prepare_cluster_dir
from sessionquorum.cluster._cli import main


def test_status_watch_repeats_until_ctrl_c_and_exits_with_the_last_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare_cluster_dir(tmp_path, 3)
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_local, "time", SimpleNamespace(sleep=sleep))
    # No node runs: every round says so, and no leader is agreed on (exit 3).
    assert main(["status", "--data-dir", str(tmp_path), "--json", "--watch", "0.5"]) == 3
    rounds = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert naps == [0.5, 0.5] and len(rounds) == 2
    assert all(r["agreed_leader"] is None and len(r["nodes"]) == 3 for r in rounds)


def test_status_watch_needs_a_positive_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare_cluster_dir(tmp_path, 3)
    assert main(["status", "--data-dir", str(tmp_path), "--watch", "0"]) == 2
    assert "--watch" in capsys.readouterr().err


def test_node_run_passes_the_log_format_to_the_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = prepare_cluster_dir(tmp_path, 3).config_path
    execs: list[list[str]] = []

    def execv(path: str, argv: list[str]) -> None:
        execs.append(argv)

    monkeypatch.setattr("os.execv", execv)
    main(["node", "run", "--config", str(config), "--node", "n1", "--log-format", "json"])
    main(["node", "run", "--config", str(config), "--node", "n1"])
    assert execs[0][-2:] == ["--log-format", "json"]
    assert "--log-format" not in execs[1]

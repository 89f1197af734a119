"""`init` writes a usable cluster directory and starts nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionquorum.cluster._cli import main
from sessionquorum.store.config import load_cluster_config


def test_init_writes_a_loadable_config_and_starts_no_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--nodes", "5", "--data-dir", str(tmp_path)]) == 0

    config = load_cluster_config(tmp_path / "cluster.json")
    assert [n.id for n in config.nodes] == ["n1", "n2", "n3", "n4", "n5"]
    assert not list(tmp_path.glob("*/node.pid"))
    assert "created 5-node cluster" in capsys.readouterr().out


def test_init_twice_reuses_the_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--data-dir", str(tmp_path)]) == 0
    first = (tmp_path / "cluster.json").read_bytes()
    assert main(["init", "--data-dir", str(tmp_path)]) == 0
    assert (tmp_path / "cluster.json").read_bytes() == first
    assert "reusing 3-node cluster" in capsys.readouterr().out

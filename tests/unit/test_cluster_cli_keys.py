"""`keys show | rotate`: every node's key file gains the new key, old keys stay, no key is printed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from sessionquorum.cluster._bootstrap import prepare_cluster_dir
from sessionquorum.cluster._cli import main
from sessionquorum.store.keyfile import read_keys, write_keys


def test_init_writes_a_0600_key_file_that_the_config_names(tmp_path: Path) -> None:
    prepared = prepare_cluster_dir(tmp_path, 3)
    path = prepared.config.key_file_of(prepared.config.nodes[0])
    assert path == tmp_path / "secrets" / "atrest.keys"
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_keys(path).current == 1


def test_rotate_adds_a_current_key_to_every_nodes_key_file_and_keeps_the_old(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare_cluster_dir(tmp_path, 3)
    raw = json.loads((tmp_path / "cluster.json").read_text())
    raw["nodes"][2]["key_file"] = "secrets/n3.keys"  # one node with a key file of its own
    (tmp_path / "cluster.json").write_text(json.dumps(raw))
    shared = read_keys(tmp_path / "secrets" / "atrest.keys")
    write_keys(tmp_path / "secrets" / "n3.keys", shared)
    assert main(["keys", "rotate", "--data-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["current"] == 2
    files = [read_keys(tmp_path / "secrets" / name) for name in ("atrest.keys", "n3.keys")]
    assert files[0] == files[1]  # the same new key everywhere
    assert files[0].current == 2 and files[0].key(1) == shared.key(1)
    assert files[0].token_key == shared.token_key


def test_show_prints_key_ids_never_key_material(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare_cluster_dir(tmp_path, 1)
    assert main(["keys", "show", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    keys = read_keys(tmp_path / "secrets" / "atrest.keys")
    assert "atrest.keys" in out
    secrets = [base64.b64encode(k).decode() for k in (keys.token_key, *(v for _, v in keys.keys))]
    assert not any(s in out for s in secrets)


def test_rotate_without_encryption_at_rest_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare_cluster_dir(tmp_path, 1, overrides={"atrest": {"enabled": False}})
    assert main(["keys", "rotate", "--data-dir", str(tmp_path)]) == 2
    assert "encryption at rest is off" in capsys.readouterr().err
    assert read_keys(tmp_path / "secrets" / "atrest.keys").current == 1  # untouched

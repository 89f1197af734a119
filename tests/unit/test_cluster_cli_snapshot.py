"""`sessionquorum snapshot info | restore` without a running node: checks, exit codes, the layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sessionquorum.cluster._cli import main
from sessionquorum.store.backup import BackupWriter, make_meta, read_info
from sessionquorum.store.commands import Command, Create, encode
from sessionquorum.store.config import Limits
from sessionquorum.store.snapshots import read_snapshot
from sessionquorum.store.state import SessionMachine


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    m = SessionMachine(Limits())
    for n in range(5):
        op = Create(hashlib.sha256(b"%d" % n).digest(), f"h{n}", "alice", (), 60_000, 3_600_000)
        m.apply(encode(Command(op, now_ms=1_700_000_000_000 + n, client_id=b"c", sequence=n + 1)))
    capture = m.capture()
    path = tmp_path / "b.sqbak"
    writer = BackupWriter(path, make_meta(capture, index=40, term=4, leader="n2", saved_at_ms=0))
    writer.write(capture.serialize())
    writer.finish()
    return path


def _last_json(out: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(out.splitlines()[-1])
    return result


def test_restore_writes_a_new_cluster_whose_nodes_hold_the_same_snapshot(
    backup: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new"
    assert main(["snapshot", "restore", str(backup), "--out", str(out), "--keep-time", "--json"]) == 0
    result = _last_json(capsys.readouterr().out)
    assert result["restored_digest"] == result["saved_digest"] == read_info(backup).digest
    snaps = [read_snapshot(out / n / "raft.snapshot") for n in ("n1", "n2", "n3")]
    assert snaps[0] == snaps[1] == snaps[2]
    assert (snaps[0].last[1], snaps[0].last[2], snaps[0].prev[1]) == (40, 4, 39)
    assert hashlib.sha256(snaps[0].state).hexdigest() == result["restored_digest"]
    assert (out / "cluster.json").exists() and (out / "tls" / "client.pem").exists()


def test_restore_refuses_a_directory_that_is_not_empty_exit_2(
    backup: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    assert main(["snapshot", "restore", str(backup), "--out", str(tmp_path / "busy")]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_backup_is_refused_exit_1_with_one_line_and_nothing_written(
    backup: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    data = bytearray(backup.read_bytes())
    if damage == "truncate":
        del data[-100:]
    else:
        data[-100] ^= 1
    backup.write_bytes(bytes(data))
    assert main(["snapshot", "info", str(backup)]) == 1
    assert main(["snapshot", "restore", str(backup), "--out", str(tmp_path / "new")]) == 1
    err = capsys.readouterr().err.splitlines()
    prefix = "sessionquorum: error: refusing the backup: "
    assert len(err) == 2 and all(line.startswith(prefix) for line in err)
    assert ("truncated" if damage == "truncate" else "fails its sha256") in err[1]
    assert not (tmp_path / "new").exists()

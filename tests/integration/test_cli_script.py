"""The installed `sessionquorum` script against a real local cluster: init, up, status,
sessions list / revoke, down, as an operator's shell script would run them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionquorum.client import SessionClient, TLSConfig
from sessionquorum.cluster import ClusterView

pytestmark = pytest.mark.cluster

# The console script pip installed next to this interpreter (`make install`: .venv/bin).
SCRIPT = Path(sys.executable).parent / "sessionquorum"
COMMAND_TIMEOUT_S = 90.0


def run(*argv: str, expect: int = 0) -> dict[str, Any]:
    """Run the script with --json; its one JSON object, after checking the exit status."""
    done = subprocess.run(
        [str(SCRIPT), *argv, "--json"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert done.returncode == expect, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    result: dict[str, Any] = json.loads(lines[0])
    return result


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    assert SCRIPT.exists(), f"no console script at {SCRIPT}: run `make install`"
    data = tmp_path / "cluster"
    yield data
    if (data / "cluster.json").exists():  # whatever the test did, no node outlives it
        subprocess.run([str(SCRIPT), "down", "--data-dir", str(data)], capture_output=True, timeout=60)


def test_script_init_up_status_sessions_down(data_dir: Path) -> None:
    d = ["--data-dir", str(data_dir)]

    init = run("init", *d)
    assert init["created"] is True and [n["id"] for n in init["nodes"]] == ["n1", "n2", "n3"]
    up = run("up", "--detach", "--timeout", "60", *d)
    assert up["created"] is False and up["leader"] in ("n1", "n2", "n3")

    status = run("status", *d)
    assert status["agreed_leader"] == up["leader"]
    assert [(n["alive"], n["answers"]) for n in status["nodes"]] == [("yes", True)] * 3
    assert sum(n["leader"] for n in status["nodes"]) == 1

    tls = TLSConfig.from_files(up["tls"]["ca"], up["tls"]["cert"], up["tls"]["key"])
    with SessionClient([n["grpc"] for n in up["nodes"]], tls=tls) as client:
        made = {client.create(principal="alice").session.handle for _ in range(2)}
        client.create(principal="bob")

    listed = run("sessions", "list", "alice", *d)
    assert listed["principal"] == "alice"
    assert {s["handle"] for s in listed["sessions"]} == made
    assert all(s["principal"] == "alice" and "token" not in s for s in listed["sessions"])

    assert set(run("sessions", "revoke", "alice", *d)["revoked"]) == made
    assert run("sessions", "list", "alice", *d)["sessions"] == []
    assert run("sessions", "revoke", "alice", *d, expect=1)["revoked"] == []  # nothing left
    assert len(run("sessions", "list", "bob", *d)["sessions"]) == 1

    assert run("down", *d) == {"stopped": dict.fromkeys(("n1", "n2", "n3"), "stopped")}
    assert run("status", *d, expect=3)["agreed_leader"] is None
    assert not any(ClusterView(data_dir).pid_path(n).exists() for n in ("n1", "n2", "n3"))

"""`make bench-compare` still runs: one tiny cell per target, through the harness's real CLI.

The harness is a script (python -m bench.compare, run from the repository root), so it is
tested as one: a subprocess, its exit code, and the JSON and PNG it leaves. The etcd and
Redis run needs their binaries and the bench extra; without them it is skipped, saying which.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
# A cluster start, a 10-session warm-up and a 0.5 s cell per target; generous for a busy CI box.
RUN_TIMEOUT_S = 180.0


def _anchors_missing() -> str | None:
    missing = []
    for binary, package in (("etcd", "etcd-server"), ("redis-server", "redis-server")):
        if shutil.which(binary) is None:
            missing.append(f"{binary} (apt-get install {package})")
    for module in ("aetcd", "redis"):
        if importlib.util.find_spec(module) is None:
            missing.append(f"Python module {module} (pip install -e '.[bench]')")
    return "needs " + ", ".join(missing) if missing else None


def _run_harness(tmp_path: Path, targets: str) -> dict[str, object]:
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "bench.compare", "--targets", targets, "--mixes", "mixed", "--clients", "2",
            "--repetitions", "1", "--duration-s", "0.5", "--warmup-s", "0.1", "--pool", "10",
            "--out", str(out), "--data-root", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    (json_path,) = out.glob("compare-*.json")
    (png_path,) = out.glob("compare-*.png")
    assert png_path.stat().st_size > 0
    # The servers' temp dir is gone: everything the harness started was stopped and cleaned up.
    assert not list(tmp_path.glob("sq-bench-compare-*"))
    document: dict[str, object] = json.loads(json_path.read_text())
    return document


def _medians_by_target(document: dict[str, object]) -> dict[str, dict[str, object]]:
    medians = document["medians"]
    assert isinstance(medians, list)
    return {m["target"]: m for m in medians}


def test_bench_compare_sessionquorum_only_one_tiny_cell_reports_both_clients(tmp_path: Path) -> None:
    document = _run_harness(tmp_path, "sq-grpc,sq-client")

    by_target = _medians_by_target(document)
    assert set(by_target) == {"sq-grpc", "sq-client"}
    for median in by_target.values():
        assert isinstance(median["ops_per_s"], float) and median["ops_per_s"] > 0
        assert median["errors"] == {}
    assert document["server_exit_codes"] == {"sessionquorum": {"n1": 0, "n2": 0, "n3": 0}}
    assert str(document["sessionquorum_replicas"]).startswith("identical"), document["sessionquorum_replicas"]
    ratios = document["ratios"]
    assert isinstance(ratios, list)
    assert [(r["subject"], r["anchor"]) for r in ratios] == [("sq-client", "sq-grpc")]


@pytest.mark.slow  # make test's budget: `make bench-compare` runs the anchors for real
@pytest.mark.skipif(_anchors_missing() is not None, reason=str(_anchors_missing()))
def test_bench_compare_with_anchors_one_tiny_cell_reports_ratios(tmp_path: Path) -> None:
    document = _run_harness(tmp_path, "sq-grpc,etcd,redis")

    by_target = _medians_by_target(document)
    assert set(by_target) == {"sq-grpc", "etcd", "redis"}
    for median in by_target.values():
        assert isinstance(median["ops_per_s"], float) and median["ops_per_s"] > 0
        assert median["errors"] == {}
    ratios = document["ratios"]
    assert isinstance(ratios, list)
    assert {(r["subject"], r["anchor"]) for r in ratios} == {("sq-grpc", "etcd"), ("sq-grpc", "redis")}

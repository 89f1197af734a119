"""What the installed operator package exports, and that the chaos framework stays out of it."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import pytest

import sessionquorum.cluster as cluster_pkg
import tests.chaos.framework as framework


def _public(package: ModuleType) -> set[str]:
    names = {name for name in vars(package) if not name.startswith("_")}
    return {n for n in names if n != "annotations" and type(getattr(package, n)).__name__ != "module"}


@pytest.mark.parametrize("package", [cluster_pkg, framework], ids=["cluster", "chaos-framework"])
def test_all_is_sorted_and_complete(package: ModuleType) -> None:
    assert package.__all__ == sorted(package.__all__)
    assert set(package.__all__) == _public(package)


def test_operator_package_exports_no_chaos_names() -> None:
    assert not set(cluster_pkg.__all__) & set(framework.__all__)
    assert {"LocalCluster", "prepare_cluster_dir", "ClusterView", "agreed_leader"} <= set(cluster_pkg.__all__)


def test_operator_package_imports_without_the_framework_or_matplotlib() -> None:
    probe = (
        "import sys, sessionquorum.cluster, sessionquorum.cluster._cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('tests', 'matplotlib'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd="/")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

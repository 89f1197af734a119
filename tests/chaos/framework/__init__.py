"""The chaos framework: break a real cluster on purpose while clients work, then check.

Nemeses (`_nemesis.py`; partitions in network namespaces, `_netns.py` and `_partition.py`)
inject and heal faults while workloads (`_workloads.py`) record every call in a `History`
(`_history.py`); a linearizability checker (`_linearizability.py`, models in `_models.py`)
judges it, and `_report.py` writes a JSON + PNG report per run. `_chaos.py` runs one
scenario, `_matrix.py` the matrix (`python -m tests.chaos`, `make chaos`).

None of this is installed: it needs root, iptables and matplotlib, which a node or a client
never does (tests/chaos/DESIGN.md). It drives clusters through `sessionquorum.cluster`.
"""

from __future__ import annotations

from ._chaos import Scenario, run_scenario, unavailable_reason
from ._history import FaultWindow, History, Invocation, Op, Outcome
from ._linearizability import CheckResult, Model, check, check_all, overall
from ._models import CounterModel, RegisterModel
from ._netns import NetnsNetwork, netns_cluster, netns_unavailable_reason
from ._partition import Partition
from ._report import plot_timeline, read_report, recovery_times, summarise, write_report

__all__ = [
    "CheckResult",
    "CounterModel",
    "FaultWindow",
    "History",
    "Invocation",
    "Model",
    "NetnsNetwork",
    "Op",
    "Outcome",
    "Partition",
    "RegisterModel",
    "Scenario",
    "check",
    "check_all",
    "netns_cluster",
    "netns_unavailable_reason",
    "overall",
    "plot_timeline",
    "read_report",
    "recovery_times",
    "run_scenario",
    "summarise",
    "unavailable_reason",
    "write_report",
]

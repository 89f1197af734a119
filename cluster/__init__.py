"""Cluster tools for sessionquorum: a local launcher, fault injection and checks.

`LocalCluster` runs a cluster's nodes as processes of this machine (tests, `make run`);
`python -m sessionquorum.cluster` is the command line around it (see cluster/DESIGN.md).
The chaos suite: nemeses (`_nemesis.py`, network namespaces in `_netns.py`), workloads
that record a `History`, a linearizability checker, and a JSON + PNG report per run;
`python -m sessionquorum.cluster chaos` runs the matrix (`_matrix.py`).
"""

from __future__ import annotations

from ._bootstrap import PreparedCluster, TLSFiles, open_cluster_dir, prepare_cluster_dir
from ._chaos import Scenario, run_scenario, unavailable_reason
from ._errors import ClusterError, ClusterTimeout
from ._history import FaultWindow, History, Invocation, Op, Outcome
from ._linearizability import CheckResult, Model, check, check_all, overall
from ._local import LocalCluster, NodeCommand, NodeWrapper, default_node_command
from ._models import CounterModel, RegisterModel
from ._netns import NetnsNetwork, netns_cluster, netns_unavailable_reason
from ._partition import Partition
from ._report import plot_timeline, read_report, recovery_times, summarise, write_report
from ._status import agreed_leader
from ._view import ClusterView

__all__ = [
    "CheckResult",
    "ClusterError",
    "ClusterTimeout",
    "ClusterView",
    "CounterModel",
    "FaultWindow",
    "History",
    "Invocation",
    "LocalCluster",
    "Model",
    "NetnsNetwork",
    "NodeCommand",
    "NodeWrapper",
    "Op",
    "Outcome",
    "Partition",
    "PreparedCluster",
    "RegisterModel",
    "Scenario",
    "TLSFiles",
    "agreed_leader",
    "check",
    "check_all",
    "default_node_command",
    "netns_cluster",
    "netns_unavailable_reason",
    "open_cluster_dir",
    "overall",
    "plot_timeline",
    "prepare_cluster_dir",
    "read_report",
    "recovery_times",
    "run_scenario",
    "summarise",
    "unavailable_reason",
    "write_report",
]

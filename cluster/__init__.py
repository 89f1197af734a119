"""Operator tools for sessionquorum: a cluster directory, its TLS material, a local launcher.

`prepare_cluster_dir` writes a cluster's config, Raft secret, CA and certificates;
`LocalCluster` runs its nodes as processes of this machine (development, tests, `make run`);
`ClusterView` and `agreed_leader` look at a running cluster. The `sessionquorum` command
(`python -m sessionquorum.cluster` runs the same code) is the command line around them;
see cluster/DESIGN.md. The fault-injection framework is not here: it lives in tests/chaos/.
"""

from __future__ import annotations

from ._bootstrap import Overrides, PreparedCluster, TLSFiles, open_cluster_dir, prepare_cluster_dir
from ._errors import ClusterError, ClusterTimeout
from ._local import LocalCluster, NodeCommand, NodeWrapper, default_node_command
from ._status import agreed_leader
from ._view import ClusterView

__all__ = [
    "ClusterError",
    "ClusterTimeout",
    "ClusterView",
    "LocalCluster",
    "NodeCommand",
    "NodeWrapper",
    "Overrides",
    "PreparedCluster",
    "TLSFiles",
    "agreed_leader",
    "default_node_command",
    "open_cluster_dir",
    "prepare_cluster_dir",
]

"""Cluster tools for sessionquorum: a local launcher, fault injection and checks.

`LocalCluster` runs a cluster's nodes as processes of this machine (tests, `make run`);
`python -m sessionquorum.cluster` is the command line around it (see cluster/DESIGN.md).
"""

from __future__ import annotations

from ._bootstrap import PreparedCluster, TLSFiles, open_cluster_dir, prepare_cluster_dir
from ._errors import ClusterError, ClusterTimeout
from ._local import LocalCluster, NodeCommand, default_node_command
from ._status import agreed_leader
from ._view import ClusterView

__all__ = [
    "ClusterError",
    "ClusterTimeout",
    "ClusterView",
    "LocalCluster",
    "NodeCommand",
    "PreparedCluster",
    "TLSFiles",
    "agreed_leader",
    "default_node_command",
    "open_cluster_dir",
    "prepare_cluster_dir",
]

"""The cluster tools' two exceptions.

    ClusterError            a cluster-tools request cannot be done as asked: an unknown node,
    │                       a data dir made for another node count, a node that is (not)
    │                       running. The CLI prints the message as one line and exits 2.
    ├── BadBackup           a backup file fails its checks (snapshot info/restore): exit 1.
    ├── ClusterUnavailable  the cluster cannot answer now: no node answers, or no leader is
    │                       agreed on by a quorum. The CLI exits 3 (try again later).
    └── ClusterTimeout      a condition was not reached in time. The message carries every
                            node's log tail, because a test that fails on a timeout is only
                            debuggable from what the nodes said while it waited. Exit 1.

Problems from outside (a bad override rejected by the config parser, an OSError while
writing the directory) are translated into ClusterError where they are caught, with
`raise ... from exc`, so callers handle one tree.
"""

from __future__ import annotations


class ClusterError(Exception):
    """A cluster-tools operation cannot be done; the message says what to change."""


class BadBackup(ClusterError):
    """A backup file that is corrupt, truncated, of another version or does not decode. Exit 1."""


class ClusterUnavailable(ClusterError):
    """No quorum-agreed leader, or no node answering: nothing the request could change."""


class ClusterTimeout(ClusterError):
    """A waited-for condition did not hold in time; `log_tails` maps node id to its log tail."""

    def __init__(self, message: str, log_tails: dict[str, str]) -> None:
        super().__init__(message)
        self.log_tails = log_tails

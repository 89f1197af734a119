"""ClusterView: a cluster directory's layout, and what its nodes say about themselves.

Everything here works whoever started the nodes (this process, an earlier `up --detach`,
another terminal): it only reads the directory and asks the nodes over gRPC. LocalCluster
adds the processes on top. Every wait polls a condition, never sleeps blindly, and fails
with every node's log tail: a timeout is only debuggable from what the nodes said.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import grpc

from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.store.config import ClusterConfig

from ._bootstrap import PreparedCluster, TLSFiles, open_cluster_dir
from ._errors import ClusterError, ClusterTimeout
from ._status import STATUS_TIMEOUT_S, agreed_leader, client_credentials, fetch_statuses, secure_channel

POLL_INTERVAL_S = 0.05
DIGEST_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 64 * 1024

_T = TypeVar("_T")


class ClusterView:
    """An existing cluster directory (see prepare_cluster_dir) and its nodes' Status."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._prepared: PreparedCluster | None = None
        self._channels: dict[str, grpc.Channel] = {}

    def prepare(self) -> PreparedCluster:
        """Read the directory's config (once); ClusterError if there is no cluster there."""
        if self._prepared is None:
            self._prepared = open_cluster_dir(self.data_dir)
        return self._prepared

    # -- layout ---------------------------------------------------------------------------

    @property
    def config(self) -> ClusterConfig:
        return self.prepare().config

    @property
    def config_path(self) -> Path:
        return self.prepare().config_path

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.config.nodes)

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self.config.grpc_endpoints

    @property
    def tls_files(self) -> TLSFiles:
        """The app-role client certificate: what an application presents (session operations)."""
        return self.prepare().tls

    @property
    def admin_tls_files(self) -> TLSFiles:
        """The admin-role certificate: what this view's own channels present (Status with digest, ...)."""
        return self.prepare().admin

    def grpc_address(self, node_id: str) -> str:
        self._check_known(node_id)
        return self.config.node(node_id).grpc_address

    def _check_known(self, node_id: str) -> None:
        if node_id not in self.node_ids:
            raise ClusterError(f"unknown node {node_id!r} (known: {', '.join(self.node_ids)})")

    def node_dir(self, node_id: str) -> Path:
        self._check_known(node_id)
        return self.data_dir / node_id

    def log_path(self, node_id: str) -> Path:
        return self.node_dir(node_id) / "node.log"

    def pid_path(self, node_id: str) -> Path:
        return self.node_dir(node_id) / "node.pid"

    # -- asking the nodes -----------------------------------------------------------------

    def channel(self, node_id: str) -> grpc.Channel:
        """A new TLS channel to the node, presenting the admin certificate; the caller closes it."""
        return secure_channel(self.grpc_address(node_id), client_credentials(self.admin_tls_files))

    def _status_channel(self, node_id: str) -> grpc.Channel:
        if node_id not in self._channels:
            self._channels[node_id] = self.channel(node_id)
        return self._channels[node_id]

    def close_channels(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            channel.close()

    def statuses(
        self, digest: bool = False, timeout_s: float | None = None
    ) -> dict[str, pb.StatusResponse | None]:
        """Every node's Status, asked in parallel; None for a node that did not answer in time."""
        return self._fetch(self.node_ids, digest, timeout_s)

    def status(
        self, node_id: str, digest: bool = False, timeout_s: float | None = None
    ) -> pb.StatusResponse | None:
        """One node's Status (its local view), or None if it did not answer in time."""
        return self._fetch((node_id,), digest, timeout_s)[node_id]

    def _fetch(
        self, node_ids: Sequence[str], digest: bool, timeout_s: float | None
    ) -> dict[str, pb.StatusResponse | None]:
        if timeout_s is None:
            # A digest snapshots the whole state: give it longer than a plain status.
            timeout_s = DIGEST_TIMEOUT_S if digest else STATUS_TIMEOUT_S
        channels = {n: self._status_channel(n) for n in node_ids}
        return fetch_statuses(channels, digest=digest, timeout_s=timeout_s)

    def converged(self, node_ids: Sequence[str] | None = None) -> str | None:
        """The shared state digest if the nodes (default: all) applied the same log, else None.

        Equal `last_applied` too, so a node that is merely behind is not taken for diverged.
        """
        statuses = self.statuses(digest=True)
        wanted = [statuses.get(n) for n in (node_ids or self.node_ids)]
        if any(s is None for s in wanted):
            return None
        states = {(s.last_applied, s.state_digest) for s in wanted if s is not None}
        return next(iter(states))[1] if len(states) == 1 else None

    def leader_id(self) -> str | None:
        """The leader a quorum agrees on right now and that accepts writes, else None.

        A new cluster's leader accepts writes once it applied what was committed at its
        start and the cluster's limits are seeded (store/duties.py): a moment after election.
        """
        statuses = self.statuses()
        leader = agreed_leader(statuses, {n.id: n.grpc_address for n in self.config.nodes})
        status = statuses.get(leader) if leader is not None else None
        if status is None or not (status.ready and status.accepting_writes):
            return None
        return leader

    def wait_for_leader(self, timeout_s: float = 30.0) -> str:
        """The agreed leader's id, waiting for one; ClusterTimeout (with log tails) if none comes."""
        return self.wait_until(self.leader_id, timeout_s, "a leader agreed by a quorum")

    def wait_for_new_leader(self, old: str, timeout_s: float = 30.0) -> str:
        """A leader other than `old` (killed, paused or cut off), agreed by a quorum."""

        def other() -> str | None:
            leader = self.leader_id()
            return leader if leader not in (None, old) else None

        return self.wait_until(other, timeout_s, f"a leader other than {old}")

    def wait_until(
        self,
        predicate: Callable[[], _T | Literal[False] | None],
        timeout_s: float = 30.0,
        what: str = "a condition",
    ) -> _T:
        """Poll `predicate` every ~50 ms until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise self._timeout(what, timeout_s)
            time.sleep(POLL_INTERVAL_S)

    def _timeout(self, what: str, timeout_s: float) -> ClusterTimeout:
        tails = self.log_tails()
        parts = [f"timed out after {timeout_s:.1f}s waiting for {what}"]
        for node_id, tail in tails.items():
            parts.append(f"--- {node_id}: {self.log_path(node_id)} (last {LOG_TAIL_LINES} lines) ---\n{tail}")
        return ClusterTimeout("\n".join(parts), tails)

    def log_tail(self, node_id: str, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the node's log ("" if it has none yet)."""
        try:
            with self.log_path(node_id).open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - LOG_TAIL_BYTES))
                data = f.read()
        except FileNotFoundError:
            return ""
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    def log_tails(self, lines: int = LOG_TAIL_LINES) -> dict[str, str]:
        return {n: self.log_tail(n, lines) for n in self.node_ids}

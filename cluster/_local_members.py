"""LocalCluster's live membership: grow and shrink a running cluster (cluster/_grow.py does
the directory and the RPCs), and make the directory agree with the members.

A MemberAdd or MemberRemove answered with an error may have committed all the same (a lost
reply, a deadline, a leader change, a retry refused because the first try had done it): the
settled MemberList decides (`_grow.settled_members`), and the node's entry, certificate,
data dir and process follow it. A new local node must answer Status before it is made a
member, so one that exits at start never becomes a member that does not run.
"""

from __future__ import annotations

import logging
import subprocess
from typing import Any

from sessionquorum.proto import sessionquorum_pb2 as pb

from . import _grow
from ._bootstrap import open_cluster_dir
from ._errors import ClusterError
from ._status import fetch_statuses
from ._view import ClusterView

logger = logging.getLogger(__name__)

# A node added live must answer Status this soon after its start, before it is made a member.
START_TIMEOUT_S = 30.0


class LiveMembership(ClusterView):
    """Mixed into LocalCluster, which provides the processes (`_procs`, `start_node`,
    `_kill_if_running`)."""

    _procs: dict[str, subprocess.Popen[bytes]]
    _nodes: int
    # Membership changes whose reply was an error but that the settled MemberList
    # showed done (grow / shrink): what a chaos run reports and a test counts.
    reconciled: list[str]

    def start_node(self, node_id: str) -> int:
        raise NotImplementedError

    def _kill_if_running(self, node_id: str) -> bool:
        raise NotImplementedError

    def reload(self) -> None:
        """Read cluster.json again (after a node was added or dropped)."""
        self._prepared = open_cluster_dir(self.data_dir)
        self._nodes = len(self._prepared.config.nodes)

    def add_node(self, node_id: str | None = None) -> str:
        """A new node's entry, certificate and data dir, and the node started and answering
        (not a member yet). A node that does not come up (it exits at start: a port taken
        meanwhile, say) is taken back, entry and all: ClusterError with its log's tail."""
        node_id = _grow.add_node_entry(self.data_dir, node_id)
        self.reload()
        try:
            self.start_node(node_id)
            self._wait_answering(node_id)
        except ClusterError:
            self.forget_node(node_id)  # never added, so never a member: no trace of it
            raise
        return node_id

    def _wait_answering(self, node_id: str, timeout_s: float = START_TIMEOUT_S) -> None:
        def answers() -> bool:
            # No Popen in this frame: a gRPC error's traceback in Status may keep the frame
            # alive in a cycle, and a Popen freed by the collector later warns (`detach`).
            code = self._procs[node_id].poll() if node_id in self._procs else None
            if code is not None:
                tail = self.log_tail(node_id, 10)
                raise ClusterError(f"{node_id} exited at start (code {code}); its log ends:\n{tail}")
            # A new channel each time: one refused before the node listened would back off.
            channel = self.channel(node_id)
            try:
                return fetch_statuses({node_id: channel})[node_id] is not None
            finally:
                channel.close()

        self.wait_until(answers, timeout_s, f"the new node {node_id} to answer")

    def member_add_request(self, node_id: str, timeout_s: float = 30.0) -> Any:
        spec = self.config.node(node_id)
        return pb.MemberAddRequest(
            node_id=node_id,
            raft_address=spec.raft_address,
            grpc_address=spec.grpc_address,
            timeout_s=timeout_s,
        )

    def grow(
        self,
        node_id: str | None = None,
        timeout_s: float = 30.0,
        *,
        raft: str | None = None,
        grpc_address: str | None = None,
    ) -> tuple[str, Any]:
        """Add a node: its entry and certificate, start it (a local one: no addresses
        given), MemberAdd. Returns (id, reply).

        A MemberAdd that fails may have happened all the same (a lost reply, a deadline, a
        leader change): the settled MemberList decides. A member stays (the reply is then a
        MemberAddResponse with the members; `reconciled` says so); otherwise the node is
        stopped, its entry dropped, and the error raised. When the cluster cannot say
        (ClusterUnavailable), everything stays as it is: the node may be a member.
        """
        if raft is None and grpc_address is None:
            node_id = self.add_node(node_id)
        else:
            node_id = _grow.add_node_entry(self.data_dir, node_id, raft, grpc_address)
            self.reload()
        try:
            return node_id, _grow.send_change(self, self.member_add_request(node_id, timeout_s))
        except ClusterError as exc:
            settled = _grow.outcome(self, exc)
            if node_id not in _grow.member_ids(settled):
                self.forget_node(node_id)
                raise
            self._note_reconciled(f"add {node_id}", exc, "it is a member")
            return node_id, pb.MemberAddResponse(members=settled.members)

    def shrink(self, node_id: str, timeout_s: float = 30.0) -> Any:
        """MemberRemove (the leader hands over first if it is the one), then stop the node
        and drop its entry, certificate and data dir. Returns the reply.

        A MemberRemove that fails may have happened all the same: the settled MemberList
        decides. Still a member: the error is raised and nothing changes here. Not a member
        (any more, or never): the node goes as after a removal, and `reconciled` says so.
        """
        self._check_known(node_id)
        try:
            reply = _grow.send_change(self, pb.MemberRemoveRequest(node_id=node_id, timeout_s=timeout_s))
        except ClusterError as exc:
            settled = _grow.outcome(self, exc)
            if node_id in _grow.member_ids(settled):
                raise
            self._note_reconciled(f"remove {node_id}", exc, "it is not a member")
            reply = pb.MemberRemoveResponse(members=settled.members)
        self.forget_node(node_id)
        return reply

    def forget_node(self, node_id: str) -> None:
        """Stop a node that is not a member and drop its entry, certificate and data dir."""
        self._kill_if_running(node_id)
        channel = self._channels.pop(node_id, None)
        if channel is not None:
            channel.close()
        _grow.drop_node_entry(self.data_dir, node_id)
        self.reload()

    def _note_reconciled(self, change: str, error: ClusterError, truth: str) -> None:
        note = f"{change}: {str(error).splitlines()[0]}; the settled MemberList says {truth}"
        logger.warning("membership change with an unknown outcome: %s", note)
        self.reconciled.append(note)

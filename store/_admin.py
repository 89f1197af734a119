"""Admin RPCs about the cluster itself (not sessions): leadership transfer.

Kept out of service.py, which owns the session operations; the servicer's methods call
these inside its one error boundary. Every RPC here needs the admin role.
"""

from __future__ import annotations

import time

from sessionquorum.proto import sessionquorum_pb2 as pb

from . import errors as e
from .config import NodeConfig
from .raft import ReplicatedLog

# A request may ask for at most this long (the node's default is raft.transfer_timeout_s).
MAX_TRANSFER_TIMEOUT_S = 60.0


def _target(config: NodeConfig, node_id: str) -> str | None:
    """The raft address of `node_id` ("" -> None: the node picks); InvalidArgument if unknown."""
    if not node_id:
        return None
    for spec in config.cluster.nodes:
        if spec.id == node_id:
            if spec.id == config.node.id:
                raise e.InvalidArgument(f"node {node_id!r} is the leader already")
            return spec.raft_address
    known = ", ".join(n.id for n in config.cluster.nodes)
    raise e.InvalidArgument(f"to_node_id {node_id[:64]!r} is not a member (members: {known})")


async def leader_transfer(
    raft: ReplicatedLog, config: NodeConfig, request: pb.LeaderTransferRequest
) -> pb.LeaderTransferResponse:
    """On the leader: hand over and answer with who leads now."""
    timeout_s = request.timeout_s or config.cluster.raft.transfer_timeout_s
    if not 0 < timeout_s <= MAX_TRANSFER_TIMEOUT_S:
        raise e.InvalidArgument(f"timeout_s must be > 0 and at most {MAX_TRANSFER_TIMEOUT_S:g}")
    target = _target(config, request.to_node_id)
    if not raft.is_leader():
        leader = raft.leader_raft_address()
        address = config.cluster.grpc_address_of_raft(leader) if leader else None
        raise e.NotLeader(f"this node is not the leader; the leader is {address or 'unknown'}", address)
    started = time.perf_counter()
    leader = await raft.transfer_leadership(target, timeout_s)
    seconds = time.perf_counter() - started
    node_ids = {n.raft_address: n.id for n in config.cluster.nodes}
    if leader is None:
        return pb.LeaderTransferResponse(seconds=seconds)
    return pb.LeaderTransferResponse(
        leader_node_id=node_ids.get(leader, leader),
        leader_address=config.cluster.grpc_address_of_raft(leader) or "",
        seconds=seconds,
    )

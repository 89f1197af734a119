"""Admin RPCs about the cluster itself (not sessions): leadership transfer, the member list.

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


def _target(raft: ReplicatedLog, config: NodeConfig, node_id: str) -> str | None:
    """The raft address of `node_id` ("" -> None: the node picks); InvalidArgument if unknown."""
    if not node_id:
        return None
    names = raft.names()
    for address in raft.member_addresses:
        if address in names and names[address].node_id == node_id:
            if address == config.node.raft_address:
                raise e.InvalidArgument(f"node {node_id!r} is the leader already")
            return address
    known = ", ".join(raft.member_ids())
    raise e.InvalidArgument(f"to_node_id {node_id[:64]!r} is not a member (members: {known})")


async def leader_transfer(
    raft: ReplicatedLog, config: NodeConfig, request: pb.LeaderTransferRequest
) -> pb.LeaderTransferResponse:
    """On the leader: hand over and answer with who leads now."""
    timeout_s = request.timeout_s or config.cluster.raft.transfer_timeout_s
    if not 0 < timeout_s <= MAX_TRANSFER_TIMEOUT_S:
        raise e.InvalidArgument(f"timeout_s must be > 0 and at most {MAX_TRANSFER_TIMEOUT_S:g}")
    target = _target(raft, config, request.to_node_id)
    if not raft.is_leader():
        raise not_leader(raft)
    started = time.perf_counter()
    leader = await raft.transfer_leadership(target, timeout_s)
    seconds = time.perf_counter() - started
    if leader is None:
        return pb.LeaderTransferResponse(seconds=seconds)
    return pb.LeaderTransferResponse(
        leader_node_id=raft.node_id_of(leader),
        leader_address=raft.grpc_address_of(leader) or "",
        seconds=seconds,
    )


def not_leader(raft: ReplicatedLog) -> e.NotLeader:
    address = raft.grpc_address_of(raft.leader_raft_address())
    return e.NotLeader(f"this node is not the leader; the leader is {address or 'unknown'}", address)


async def member_list(
    raft: ReplicatedLog, config: NodeConfig, request: pb.MemberListRequest
) -> pb.MemberListResponse:
    """This node's view of the Raft membership, named by the cluster's node specs."""
    if request.leader_only and not raft.is_leader():
        raise not_leader(raft)
    st = raft.status()
    views = raft.members()
    levels = raft.read(lambda m: dict(m.member_levels))
    names = raft.names()
    members = []
    for view in views:
        name = names.get(view.raft_address)
        node_id = name.node_id if name is not None else view.raft_address
        members.append(
            pb.Member(
                node_id=node_id,
                raft_address=view.raft_address,
                grpc_address=name.grpc_address if name is not None else "",
                is_leader=view.raft_address == st.leader_raft_address,
                is_self=view.raft_address == config.node.raft_address,
                connected=view.connected,
                match_index=-1 if view.match_index is None else view.match_index,
                command_level=levels.get(node_id, 0),
            )
        )
    return pb.MemberListResponse(
        members=sorted(members, key=lambda m: m.node_id),
        answered_by=config.node.id,
        term=st.term,
        commit_index=st.commit_index,
        from_leader=st.is_leader,
    )

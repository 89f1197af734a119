"""MemberAdd / MemberRemove (admin, on the leader): live membership, one node at a time.

Order of an add: the node's identity (id, Raft and gRPC address) goes into the log first
(`MemberIdentity`, level 5), then the Raft change, so every node can name the new member
from the moment it counts. A remove runs the other way round. Both are refused before
anything is written when the change could not commit with the members connected now.
The leader never removes itself (pysyncobj refuses): it hands leadership over first and
answers NotLeader with the new leader, where the caller sends the request again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

from sessionquorum.proto import sessionquorum_pb2 as pb

from . import _admin
from . import commands as c
from . import errors as e
from ._membership import ADD, REMOVE
from .config import NodeConfig, split_address
from .errors import ConfigError
from .raft import ReplicatedLog

# Most Raft members a cluster may grow to (each one more costs every write a message).
MAX_CLUSTER_MEMBERS = 9
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_ADDRESS_CHARS = 255
# A change waits at most this long by default (the new member may need a snapshot first).
DEFAULT_TIMEOUT_FACTOR = 5
MAX_TIMEOUT_S = 120.0

Propose = Callable[[c.Op, float], Awaitable[object]]


def _timeout(config: NodeConfig, requested: float) -> float:
    if not config.cluster.raft.dynamic_membership:
        raise e.NotReady("live membership is off on this node (raft.dynamic_membership); nothing changed")
    timeout_s = requested or config.cluster.raft.transfer_timeout_s * DEFAULT_TIMEOUT_FACTOR
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise e.InvalidArgument(f"timeout_s must be > 0 and at most {MAX_TIMEOUT_S:g}")
    return timeout_s


def _address(value: str, what: str) -> str:
    if not value or len(value) > MAX_ADDRESS_CHARS:
        raise e.InvalidArgument(f"{what} must be host:port (1 to {MAX_ADDRESS_CHARS} characters)")
    try:
        _, port = split_address(value)
    except ConfigError:
        raise e.InvalidArgument(f"{what} {value[:64]!r} is not host:port") from None
    if not 0 < port < 65536:
        raise e.InvalidArgument(f"{what} {value[:64]!r} has no valid port")
    return value


def _majority_reachable(raft: ReplicatedLog, size_after: int, leaving: str | None = None) -> None:
    """Refuse a change whose configuration could not commit it with the links up now."""
    connected = sum(1 for v in raft.members() if v.connected and v.raft_address != leaving)
    needed = size_after // 2 + 1
    if connected < needed:
        raise e.NotReady(
            f"only {connected} member(s) are connected; the new configuration of {size_after} needs "
            f"{needed} to commit the change: bring the missing members back first (nothing changed)"
        )


async def _view(raft: ReplicatedLog, config: NodeConfig) -> list[pb.Member]:
    listed = await _admin.member_list(raft, config, pb.MemberListRequest())
    return list(listed.members)


async def member_add(
    raft: ReplicatedLog, config: NodeConfig, request: pb.MemberAddRequest, propose: Propose, level: int
) -> pb.MemberAddResponse:
    if not NODE_ID.fullmatch(request.node_id):
        raise e.InvalidArgument("node_id must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
    raft_address = _address(request.raft_address, "raft_address")
    grpc_address = _address(request.grpc_address, "grpc_address")
    timeout_s = _timeout(config, request.timeout_s)
    if not raft.is_leader():
        raise _admin.not_leader(raft)
    names = raft.names()
    current = raft.member_addresses
    if raft_address in current:
        owner = names[raft_address].node_id if raft_address in names else raft_address
        if owner != request.node_id:
            raise e.InvalidArgument(f"raft_address {raft_address!r} is member {owner!r} already")
        # Added before: a retry. pysyncobj counts a change from its append, so it may not be
        # committed yet (the first try timed out, or a new leader has it in its log's tail):
        # answer only once a no-op after it committed, as the first try would have.
        await propose(c.Barrier(), timeout_s)
        return pb.MemberAddResponse(members=await _view(raft, config))
    if level < c.MEMBERSHIP_LEVEL:
        raise e.UpgradePending(
            f"member add needs command level {c.MEMBERSHIP_LEVEL}; a member supports only {level}"
        )
    if request.node_id in raft.member_ids():
        raise e.InvalidArgument(f"node {request.node_id!r} is a member already, at another address")
    if len(current) >= MAX_CLUSTER_MEMBERS:
        raise e.QuotaExceeded(f"a cluster has at most {MAX_CLUSTER_MEMBERS} members")
    _majority_reachable(raft, len(current) + 1)
    started = time.perf_counter()
    op = c.MemberIdentity(request.node_id, raft_address, grpc_address, joined=True)
    await propose(op, timeout_s)
    await raft.change_membership(ADD, raft_address, timeout_s)
    return pb.MemberAddResponse(members=await _view(raft, config), seconds=time.perf_counter() - started)


async def member_remove(
    raft: ReplicatedLog, config: NodeConfig, request: pb.MemberRemoveRequest, propose: Propose, level: int
) -> pb.MemberRemoveResponse:
    timeout_s = _timeout(config, request.timeout_s)
    if not raft.is_leader():
        raise _admin.not_leader(raft)
    names = raft.names()
    current = raft.member_addresses
    found = [a for a in current if (names[a].node_id if a in names else a) == request.node_id]
    if not found:
        raise e.InvalidArgument(
            f"node {request.node_id[:64]!r} is not a member ({', '.join(raft.member_ids())})"
        )
    address = found[0]
    if len(current) <= 1:
        raise e.InvalidArgument("the last member cannot be removed")
    started = time.perf_counter()
    if address == config.node.raft_address:
        # pysyncobj never removes its leader: hand over, and let the caller ask the new one.
        leader = await raft.transfer_leadership(None, timeout_s)
        where = raft.grpc_address_of(leader)
        raise e.NotLeader(
            f"this node was the leader and handed leadership over; send the removal to the leader, "
            f"{where or 'unknown'}",
            where,
        )
    _majority_reachable(raft, len(current) - 1, leaving=address)
    await raft.change_membership(REMOVE, address, timeout_s)
    if level >= c.MEMBERSHIP_LEVEL:
        name = names.get(address)
        grpc_address = name.grpc_address if name is not None else ""
        await propose(
            c.MemberIdentity(request.node_id, address, grpc_address or "-", joined=False), timeout_s
        )
    return pb.MemberRemoveResponse(members=await _view(raft, config), seconds=time.perf_counter() - started)

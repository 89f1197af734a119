"""`leader transfer [--to NODE]` and `member list`: the cluster's membership and leadership.

`member list` asks the leader a quorum agrees on for its view of the Raft members (link
state and match index per member). `member add|remove`: cluster/_cli_membership.py.

Sent to the leader a quorum agrees on (found through the cluster directory, like `config`).
The old leader holds new writes until the target has every entry, ends its read lease,
then asks the target to campaign (store/_transfer.py): clients see one short pause.
Exit 0 once another node leads; 3 when the transfer did not happen (the old leader still
leads, every write goes on there); 2 for an unknown node.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import grpc

from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

from . import _cli_membership
from ._cli_local import require_leader
from ._errors import ClusterError, ClusterUnavailable
from ._local import LocalCluster, NodeCommand
from ._output import emit, table

# The RPC's own deadline: --timeout (or the longest a node waits) plus a margin.
RPC_MARGIN_S = 5.0
MAX_WAIT_S = 60.0

AddCommand = Callable[..., argparse.ArgumentParser]


def leader_transfer(args: argparse.Namespace, node_command: NodeCommand) -> int:
    cluster = LocalCluster.open(args.data_dir, node_command=node_command)
    try:
        old = require_leader(cluster)
        if args.to is not None and args.to not in cluster.node_ids:
            raise ClusterError(f"no node {args.to!r} in this cluster ({', '.join(cluster.node_ids)})")
        if args.to == old:
            raise ClusterError(f"{old} is the leader already")
        request = pb.LeaderTransferRequest(to_node_id=args.to or "", timeout_s=args.timeout or 0.0)
        channel = cluster.channel(old)
        try:
            reply = pb_grpc.SessionStoreStub(channel).LeaderTransfer(
                request, timeout=(args.timeout or MAX_WAIT_S) + RPC_MARGIN_S
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise ClusterError(f"refused: {exc.details()}") from None
            raise ClusterUnavailable(f"{exc.code().name}: {exc.details()}") from None
        finally:
            channel.close()
    finally:
        cluster.close_channels()
    new = reply.leader_node_id or None
    data = {"from": old, "to": new, "seconds": round(reply.seconds, 3)}
    text = f"leadership moved from {old} to {new or '(not yet known)'} in {reply.seconds:.3f} s"
    emit(args, data, text)
    return 0


def member_list(args: argparse.Namespace, node_command: NodeCommand) -> int:
    cluster = LocalCluster.open(args.data_dir, node_command=node_command)
    try:
        leader = require_leader(cluster)
        channel = cluster.channel(leader)
        try:
            reply = pb_grpc.SessionStoreStub(channel).MemberList(
                pb.MemberListRequest(leader_only=True), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            raise ClusterUnavailable(f"{exc.code().name}: {exc.details()}") from None
        finally:
            channel.close()
    finally:
        cluster.close_channels()
    rows = [
        {
            "id": m.node_id,
            "raft": m.raft_address,
            "grpc": m.grpc_address,
            "leader": m.is_leader,
            "connected": m.connected,
            "match_index": m.match_index,
            "command_level": m.command_level,
        }
        for m in reply.members
    ]
    header = ("id", "raft", "grpc", "leader", "connected", "match_index", "command_level")
    lines: list[tuple[object, ...]] = [header, *(tuple(r[k] for k in header) for r in rows)]
    data = {
        "members": rows,
        "answered_by": reply.answered_by,
        "term": reply.term,
        "commit_index": reply.commit_index,
    }
    emit(args, data, table(lines))
    return 0


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add: AddCommand,
) -> None:
    leader = commands.add_parser("leader", help="hand leadership to another member (`leader transfer`)")
    actions = leader.add_subparsers(dest="action", required=True, metavar="ACTION")
    transfer = add(
        actions,
        "transfer",
        "hand leadership to NODE (default: the most caught-up follower); writes pause briefly",
        leader_transfer,
    )
    transfer.add_argument("--to", metavar="NODE", help="the node to lead next (n1, n2, ...)")
    member = commands.add_parser("member", help="the cluster's members (`member list|add|remove`)")
    member_actions = member.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = add(
        member_actions,
        "list",
        "the Raft members as the leader sees them: link, match index, command level",
        member_list,
    )
    listing.add_argument("--timeout", type=float, default=10.0, help="seconds for the call")
    _cli_membership.add_commands(member_actions, add)
    transfer.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait (default: the nodes' raft.transfer_timeout_s)",
    )

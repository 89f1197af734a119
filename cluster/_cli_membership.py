"""`member add` and `member remove`: live membership from the command line (admin).

`member add` on a local cluster (no addresses given) makes the node's entry, certificate
and data dir, starts it (it outlives the command, like `up --detach`) and sends MemberAdd
to the leader. With `--raft` and `--grpc` (a node on another machine) it writes the entry
and a certificate for those hosts and sends MemberAdd; start the node there (copy the
directory, `sessionquorum node run --node ID`). `member remove NODE` sends MemberRemove
(if NODE leads, it hands leadership over first and the request goes to the new leader),
then stops NODE if it runs here and drops its entry, certificate and data dir.
A change whose reply is an error may have happened all the same (a lost reply, a deadline,
a leader change): the settled MemberList decides, and the files follow it (`reconciled`
in the output says so). Exit 0 once the change committed; 2 when refused (bad id, not a
member, an older member release); 3 when the cluster cannot do it now (no leader, another
change in flight, or the new configuration could not commit with the members connected
now), or cannot say whether it happened.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ._cli_local import require_leader
from ._errors import ClusterError
from ._local import LocalCluster, NodeCommand
from ._output import emit, table

AddCommand = Callable[..., argparse.ArgumentParser]


def _rows(reply: Any) -> list[dict[str, object]]:
    return [
        {"id": m.node_id, "raft": m.raft_address, "grpc": m.grpc_address, "leader": m.is_leader}
        for m in reply.members
    ]


def _emit(args: argparse.Namespace, data: dict[str, Any], headline: str) -> None:
    header = ("id", "raft", "grpc", "leader")
    lines: list[tuple[object, ...]] = [header, *(tuple(r[k] for k in header) for r in data["members"])]
    emit(args, data, headline + "\n" + table(lines))


def member_add(args: argparse.Namespace, node_command: NodeCommand) -> int:
    if (args.raft is None) != (args.grpc is None):
        raise ClusterError("give both --raft and --grpc (a node elsewhere), or neither (a local node)")
    cluster = LocalCluster.open(args.data_dir, node_command=node_command)
    local = args.raft is None
    before = set(cluster.node_ids)
    try:
        require_leader(cluster)
        # A change that failed is decided by the settled MemberList (LocalCluster.grow): a
        # node that is not a member is taken back (a retry makes a new one), one that is
        # stays. Only when the cluster cannot say does the node stay without a verdict.
        node_id, reply = cluster.grow(args.id, args.timeout, raft=args.raft, grpc_address=args.grpc)
    except ClusterError:
        if set(cluster.node_ids) - before:
            cluster.detach()  # it may be a member: it runs on, and `member list` will say
        raise
    finally:
        cluster.close_channels()
    cluster.detach()  # the node runs on after this command, like `up --detach`
    spec = cluster.config.node(node_id)
    data = {
        "added": node_id,
        "raft": spec.raft_address,
        "grpc": spec.grpc_address,
        "started_here": local,
        "seconds": round(reply.seconds, 3),
        "members": _rows(reply),
        "reconciled": cluster.reconciled,
    }
    where = "started here" if local else f"start it on its machine: sessionquorum node run --node {node_id}"
    _emit(args, data, f"added {node_id} ({where}) in {reply.seconds:.3f} s")
    return 0


def member_remove(args: argparse.Namespace, node_command: NodeCommand) -> int:
    cluster = LocalCluster.open(args.data_dir, node_command=node_command)
    try:
        require_leader(cluster)
        if args.node not in cluster.node_ids:
            raise ClusterError(f"no node {args.node!r} in this cluster ({', '.join(cluster.node_ids)})")
        running = cluster.pid(args.node) is not None
        reply = cluster.shrink(args.node, args.timeout)
    finally:
        cluster.close_channels()
    data = {
        "removed": args.node,
        "stopped_here": running,
        "seconds": round(reply.seconds, 3),
        "members": _rows(reply),
        "reconciled": cluster.reconciled,
    }
    _emit(args, data, f"removed {args.node} in {reply.seconds:.3f} s")
    return 0


def add_commands(actions: argparse._SubParsersAction[argparse.ArgumentParser], add: AddCommand) -> None:
    adding = add(
        actions,
        "add",
        "add a node: a local one (made and started here) or, with --raft/--grpc, one elsewhere",
        member_add,
    )
    adding.add_argument("--id", help="the new node's id (default: the next n<N>)")
    adding.add_argument("--raft", metavar="HOST:PORT", help="its Raft address (a node on another machine)")
    adding.add_argument("--grpc", metavar="HOST:PORT", help="its gRPC address (a node on another machine)")
    adding.add_argument("--timeout", type=float, default=30.0, help="seconds the change may take")
    removing = add(
        actions,
        "remove",
        "remove NODE (the leader hands over first); stops it if it runs here, drops its files",
        member_remove,
    )
    removing.add_argument("node", metavar="NODE", help="the member to remove (n1, n2, ...)")
    removing.add_argument("--timeout", type=float, default=30.0, help="seconds the change may take")

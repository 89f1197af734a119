"""`python -m sessionquorum.cluster`: run a local cluster, look at it, break it, stop it.

    init    --nodes 3|5              write the cluster directory (config, secrets, TLS), start nothing
    up      --nodes 3|5 [--detach]   prepare + start, wait for a leader, print how to connect;
                                     in the foreground, Ctrl-C / SIGTERM stops every node cleanly
    status                           one line per node: pid, leader?, term, commit, applied, sessions
    kill | restart | pause | resume NODE
    down                             stop every node of the data dir, found through pid files
    node    --config F --node ID     exec one node (a multi-machine deployment's entry point)
    config  get | set NAME=VALUE ... the cluster's replicated limits; `set` takes effect at one
                                     log index on every node

A user's mistake (unknown node, wrong node count, nothing running) is one line on stderr
and exit status 2, never a traceback. A cluster that fails to elect a leader in time is
exit status 1 with every node's log tail, because that is a bug to investigate.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import grpc

from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

from . import _pidfiles
from ._errors import ClusterError, ClusterTimeout
from ._local import LocalCluster, NodeCommand, default_node_command
from ._status import agreed_leader

PROG = "python -m sessionquorum.cluster"
LEADER_TIMEOUT_S = 30.0
WATCH_INTERVAL_S = 0.5


class _StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived while `up` was still starting the cluster."""


def _shown(path: Path) -> str:
    """A path as the user would type it: relative when under the working directory."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


def _client_example(cluster: LocalCluster) -> str:
    tls = cluster.tls_files
    endpoints = ", ".join(repr(e) for e in cluster.endpoints)
    files = ", ".join(repr(_shown(p)) for p in (tls.ca, tls.cert, tls.key))
    # The interpreter that has the package: the project's .venv under `make run`.
    python = _shown(Path(sys.executable))
    return (
        f'{python} -c "from sessionquorum.client import SessionClient, TLSConfig; '
        f"c = SessionClient([{endpoints}], tls=TLSConfig.from_files({files})); "
        "print(c.validate(c.create(principal='alice').token))\""
    )


def _init(args: argparse.Namespace, node_command: NodeCommand) -> int:
    """Write the cluster directory (config, secrets, TLS) without starting anything."""
    cluster = LocalCluster(args.data_dir, args.nodes, node_command=node_command)
    prepared = cluster.prepare()
    verb = "created" if prepared.created else "reusing"
    print(f"{verb} {len(cluster.node_ids)}-node cluster in {_shown(cluster.data_dir)}")
    print(f"  config: {_shown(prepared.config_path)}")
    for node_id in cluster.node_ids:
        print(f"  {node_id}  grpc {cluster.grpc_address(node_id)}")
    return 0


def _up(args: argparse.Namespace, node_command: NodeCommand) -> int:
    cluster = LocalCluster(args.data_dir, args.nodes, node_command=node_command)
    prepared = cluster.prepare()
    where = _shown(cluster.data_dir)
    print(f"{'created' if prepared.created else 'reusing'} {len(cluster.node_ids)}-node cluster in {where}")
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    def leader_unless_stopped() -> str | None:
        if stop_requested.is_set():
            raise _StopRequested
        return cluster.leader_id()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    started = detached = False
    try:
        cluster.start()  # refuses if any node already runs: then there is nothing of ours to stop
        started = True
        leader = cluster.wait_until(leader_unless_stopped, args.timeout, "a leader agreed by a quorum")
        for node_id in cluster.node_ids:
            print(f"  {node_id}  grpc {cluster.grpc_address(node_id)}  pid {cluster.pid(node_id)}")
        print(f"leader: {leader}\nclient example:\n  {_client_example(cluster)}")
        if args.detach:
            cluster.detach()
            detached = True
            print(f"nodes keep running; stop them with: {PROG} down --data-dir {where}")
            return 0
        print("running; Ctrl-C stops every node", flush=True)
        while not stop_requested.wait(WATCH_INTERVAL_S):
            for node_id, code in cluster.reap().items():
                print(
                    f"node {node_id} exited unexpectedly ({_describe_exit(code)}); "
                    f"see {_shown(cluster.log_path(node_id))}",
                    file=sys.stderr,
                    flush=True,
                )
        return 0
    except _StopRequested:
        return 0
    finally:
        if started and not detached:
            print("stopping nodes...", flush=True)
            codes = cluster.down()
            print(", ".join(f"{n}: {_describe_exit(c)}" for n, c in codes.items()) or "no node was running")
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _status(args: argparse.Namespace, node_command: NodeCommand) -> int:
    cluster = LocalCluster.open(args.data_dir, node_command=node_command)
    statuses = cluster.statuses()
    header = ("node", "pid", "alive", "leader", "term", "commit", "applied", "sessions", "grpc")
    rows = [header]
    for node_id in cluster.node_ids:
        pid = _pidfiles.read_pid_file(cluster.pid_path(node_id))
        running = cluster.pid(node_id)
        alive = "no" if running is None else "paused" if _pidfiles.proc_state(running) == "T" else "yes"
        s = statuses[node_id]
        numbers = ("-",) * 4 if s is None else (s.term, s.commit_index, s.last_applied, s.session_count)
        leader = "-" if s is None else ("yes" if s.is_leader else "no")
        rows.append((node_id, pid or "-", alive, leader, *numbers, cluster.grpc_address(node_id)))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    agreed = agreed_leader(statuses, {n.id: n.grpc_address for n in cluster.config.nodes})
    print(f"agreed leader: {agreed or 'none'}")
    cluster.close_channels()
    return 0


# command -> (help, what it did, the LocalCluster method)
_SIGNAL_ACTIONS: dict[str, tuple[str, str, Callable[[LocalCluster, str], None]]] = {
    "kill": ("SIGKILL one node and wait until it is gone", "killed", LocalCluster.kill),
    "pause": ("SIGSTOP one node (frozen, sockets open)", "paused", LocalCluster.pause),
    "resume": ("SIGCONT a paused node", "resumed", LocalCluster.resume),
}


def _signal_action(action: str) -> Callable[[argparse.Namespace, NodeCommand], int]:
    _, done, method = _SIGNAL_ACTIONS[action]

    def run(args: argparse.Namespace, node_command: NodeCommand) -> int:
        cluster = LocalCluster.open(args.data_dir, node_command=node_command)
        pid = cluster.pid(args.node)
        method(cluster, args.node)
        print(f"{done} {args.node} (pid {pid})")
        return 0

    return run


def _restart(args: argparse.Namespace, node_command: NodeCommand) -> int:
    cluster = LocalCluster.open(args.data_dir, node_command=node_command)
    print(f"restarted {args.node} as pid {cluster.restart(args.node)}")
    cluster.detach()
    return 0


def _down(args: argparse.Namespace, node_command: NodeCommand) -> int:
    codes = LocalCluster.open(args.data_dir, node_command=node_command).down()
    print(", ".join(f"{n}: {_describe_exit(c)}" for n, c in codes.items()) or "no node was running")
    return 0


def _config(args: argparse.Namespace, node_command: NodeCommand) -> int:
    cluster = LocalCluster.open(args.data_dir, node_command=node_command)
    try:
        leader = cluster.leader_id()
        if leader is None:
            raise ClusterError("no leader is agreed on right now; try again when `status` shows one")
        status = cluster.status(leader)
        if status is None:
            raise ClusterError(f"the leader {leader} did not answer")
        if args.action == "get":
            print(json.dumps(json.loads(status.limits_json), indent=2, sort_keys=True))
            return 0
        changes: dict[str, int | str] = {}
        for pair in args.pairs:
            name, sep, value = pair.partition("=")
            if not sep or not name:
                raise ClusterError(f"expected NAME=VALUE, got {pair!r}")
            changes[name] = int(value) if value.lstrip("-").isdigit() else value
        request = pb.ConfigureRequest(
            request_id=pb.RequestId(
                client_id=secrets.token_bytes(16), sequence=1, client_epoch_ms=status.replicated_now_ms
            ),
            limits_json=json.dumps(changes),
        )
        channel = cluster.channel(leader)
        try:
            reply = pb_grpc.SessionStoreStub(channel).Configure(request, timeout=10.0)
        except grpc.RpcError as exc:
            raise ClusterError(f"refused: {exc.code().name}: {exc.details()}") from None
        finally:
            channel.close()
        print(json.dumps(json.loads(reply.limits_json), indent=2, sort_keys=True))
        return 0
    finally:
        cluster.close_channels()


def _node(args: argparse.Namespace, node_command: NodeCommand) -> int:
    config: Path = args.config
    if not config.is_file():
        raise ClusterError(f"no cluster config at {config}")
    data_dir: Path = args.node_data_dir or config.resolve().parent / args.node
    argv = list(node_command(config, args.node, data_dir))
    # Replace this process: signals and the exit status are then the node's own.
    os.execv(argv[0], argv)  # noqa: S606 - argv is our own node command, no shell involved


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Run and inspect a local sessionquorum cluster.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="cluster directory (default: ./data)"
    )

    up = commands.add_parser("up", parents=[data], help="create or reuse a cluster and start it")
    up.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    up.add_argument(
        "--detach", action="store_true", help="exit once a leader is elected, leaving nodes running"
    )
    up.add_argument("--timeout", type=float, default=LEADER_TIMEOUT_S, help="seconds to wait for a leader")
    up.set_defaults(func=_up)
    init = commands.add_parser("init", parents=[data], help="write config, secrets and TLS; start nothing")
    init.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    init.set_defaults(func=_init)
    commands.add_parser("status", parents=[data], help="one line per node").set_defaults(func=_status)
    for action, (what, _, _) in _SIGNAL_ACTIONS.items():
        sub = commands.add_parser(action, parents=[data], help=what)
        sub.add_argument("node", metavar="NODE")
        sub.set_defaults(func=_signal_action(action))
    restart = commands.add_parser("restart", parents=[data], help="kill one node (if running), then start it")
    restart.add_argument("node", metavar="NODE")
    restart.set_defaults(func=_restart)
    commands.add_parser("down", parents=[data], help="stop every node (from pid files)").set_defaults(
        func=_down
    )
    config = commands.add_parser("config", help="show or change the cluster's replicated limits")
    config_actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    config_actions.add_parser("get", parents=[data], help="print the limits in force").set_defaults(
        func=_config
    )
    config_set = config_actions.add_parser("set", parents=[data], help="change limits (one log entry)")
    config_set.add_argument("pairs", nargs="+", metavar="NAME=VALUE")
    config_set.set_defaults(func=_config)
    node = commands.add_parser("node", help="run one node in the foreground (exec)")
    node.add_argument("--config", type=Path, required=True)
    node.add_argument("--node", required=True)
    node.add_argument("--data-dir", dest="node_data_dir", type=Path, default=None)
    node.set_defaults(func=_node)
    return parser


def main(argv: Sequence[str] | None = None, *, node_command: NodeCommand = default_node_command) -> int:
    """Run one command; returns the exit status. `node_command` is replaceable for tests."""
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handler: Callable[[argparse.Namespace, NodeCommand], int] = args.func
    try:
        return handler(args, node_command)
    except ClusterTimeout as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except ClusterError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2

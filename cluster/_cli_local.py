"""The commands on a cluster directory of this machine: init, up, status, down, node signals.

Each handler takes the parsed arguments and the node command (replaceable in tests) and
returns the exit status; mistakes are raised as ClusterError and mapped to exit codes in
_cli.py. Process control goes through `LocalCluster` (cluster/DESIGN.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from . import _pidfiles
from ._bootstrap import prepare_cluster_dir
from ._errors import ClusterError, ClusterUnavailable
from ._local import LocalCluster, NodeCommand
from ._output import emit, note, table
from ._status import agreed_leader

PROG = "sessionquorum"
WATCH_INTERVAL_S = 0.5


class _StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived while `up` was still starting the cluster."""


def shown(path: Path) -> str:
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


def _stopped(args: argparse.Namespace, codes: dict[str, int | None]) -> None:
    text = ", ".join(f"{n}: {_describe_exit(c)}" for n, c in codes.items()) or "no node was running"
    emit(args, {"stopped": {n: _describe_exit(c) for n, c in codes.items()}}, text)


def _client_example(cluster: LocalCluster) -> str:
    tls = cluster.tls_files
    endpoints = ", ".join(repr(e) for e in cluster.endpoints)
    files = ", ".join(repr(shown(p)) for p in (tls.ca, tls.cert, tls.key))
    # The interpreter that has the package: the project's .venv under `make run`.
    python = shown(Path(sys.executable))
    return (
        f'{python} -c "from sessionquorum.client import SessionClient, TLSConfig; '
        f"c = SessionClient([{endpoints}], tls=TLSConfig.from_files({files})); "
        "print(c.validate(c.create(principal='alice').token))\""
    )


def init(args: argparse.Namespace, node_command: NodeCommand) -> int:
    """Write the cluster directory (config, secrets, TLS) without starting anything."""
    hosts: list[str] | None = args.hosts
    nodes = len(hosts) if hosts else args.nodes or 3
    if hosts and args.nodes is not None and args.nodes != len(hosts):
        raise ClusterError(f"--nodes {args.nodes} contradicts the {len(hosts)} --hosts given")
    ports = None if args.raft_port is None else (args.raft_port, args.grpc_port)
    if (args.raft_port is None) != (args.grpc_port is None):
        raise ClusterError("give both --raft-port and --grpc-port, or neither")
    prepared = prepare_cluster_dir(args.data_dir, nodes, hosts=hosts, base_ports=ports)
    data_dir = prepared.config_path.parent
    node_list = [{"id": n.id, "raft": n.raft_address, "grpc": n.grpc_address} for n in prepared.config.nodes]
    lines = [f"{'created' if prepared.created else 'reusing'} {nodes}-node cluster in {shown(data_dir)}"]
    lines.append(f"  config: {shown(prepared.config_path)}")
    lines += [f"  {n['id']}  raft {n['raft']}  grpc {n['grpc']}" for n in node_list]
    if hosts:
        lines.append(
            "each machine needs cluster.json, secrets/raft.password, tls/ca.pem and its own "
            "tls/<node>.pem and .key; then: sessionquorum node run --config cluster.json --node <node>"
        )
    data = {"created": prepared.created, "data_dir": str(data_dir), "config": str(prepared.config_path)}
    emit(args, {**data, "nodes": node_list}, "\n".join(lines))
    return 0


def up(args: argparse.Namespace, node_command: NodeCommand) -> int:
    cluster = LocalCluster(args.data_dir, args.nodes, node_command=node_command)
    prepared = cluster.prepare()
    where = shown(cluster.data_dir)
    note(
        args,
        f"{'created' if prepared.created else 'reusing'} {len(cluster.node_ids)}-node cluster in {where}",
    )
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
        nodes = [{"id": n, "grpc": cluster.grpc_address(n), "pid": cluster.pid(n)} for n in cluster.node_ids]
        tls = cluster.tls_files
        text = [f"  {n['id']}  grpc {n['grpc']}  pid {n['pid']}" for n in nodes]
        text.append(f"leader: {leader}\nclient example:\n  {_client_example(cluster)}")
        data = {"data_dir": str(cluster.data_dir), "created": prepared.created, "leader": leader}
        tls_files = {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)}
        admin = cluster.admin_tls_files
        admin_files = {"ca": str(admin.ca), "cert": str(admin.cert), "key": str(admin.key)}
        emit(args, {**data, "nodes": nodes, "tls": tls_files, "admin_tls": admin_files}, "\n".join(text))
        if args.detach:
            cluster.detach()
            detached = True
            note(args, f"nodes keep running; stop them with: {PROG} down --data-dir {where}")
            return 0
        note(args, "running; Ctrl-C stops every node")
        while not stop_requested.wait(WATCH_INTERVAL_S):
            for node_id, code in cluster.reap().items():
                print(
                    f"node {node_id} exited unexpectedly ({_describe_exit(code)}); "
                    f"see {shown(cluster.log_path(node_id))}",
                    file=sys.stderr,
                    flush=True,
                )
        return 0
    except _StopRequested:
        return 0
    finally:
        if started and not detached:
            note(args, "stopping nodes...")
            _stopped(args, cluster.down())
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def status(args: argparse.Namespace, node_command: NodeCommand) -> int:
    """One row per node; exit 3 when no leader is agreed on by a quorum. `--watch S`: every S seconds."""
    watch: float | None = getattr(args, "watch", None)
    if watch is None:
        return _status(args, node_command)
    if watch <= 0:
        raise ClusterError("--watch needs a positive number of seconds")
    code = 0
    try:
        while True:
            if sys.stdout.isatty() and not args.json:
                print("\033[H\033[2J", end="")  # redraw in place
            code = _status(args, node_command)
            sys.stdout.flush()
            time.sleep(watch)
    except KeyboardInterrupt:
        return code


def _status(args: argparse.Namespace, node_command: NodeCommand) -> int:
    cluster = LocalCluster.open(args.data_dir, node_command=node_command)
    try:
        statuses = cluster.statuses()
    finally:
        cluster.close_channels()
    nodes: list[dict[str, Any]] = []
    for node_id in cluster.node_ids:
        running = cluster.pid(node_id)
        alive = "no" if running is None else "paused" if _pidfiles.proc_state(running) == "T" else "yes"
        s = statuses[node_id]
        answer: dict[str, Any] = {"answers": s is not None}
        if s is not None:
            answer |= {"leader": s.is_leader, "term": s.term, "commit_index": s.commit_index}
            answer |= {"last_applied": s.last_applied, "sessions": s.session_count}
        pid = _pidfiles.read_pid_file(cluster.pid_path(node_id))
        nodes.append(
            {"id": node_id, "pid": pid, "alive": alive, "grpc": cluster.grpc_address(node_id)} | answer
        )
    agreed = agreed_leader(statuses, {n.id: n.grpc_address for n in cluster.config.nodes})
    header = ("node", "pid", "alive", "leader", "term", "commit", "applied", "sessions", "grpc")
    rows: list[tuple[object, ...]] = [header]
    for n in nodes:
        leader = "-" if not n["answers"] else "yes" if n["leader"] else "no"
        keys = ("term", "commit_index", "last_applied", "sessions")
        numbers = tuple(n.get(k, "-") for k in keys)
        rows.append((n["id"], n["pid"] or "-", n["alive"], leader, *numbers, n["grpc"]))
    text = f"{table(rows)}\nagreed leader: {agreed or 'none'}"
    emit(args, {"data_dir": str(cluster.data_dir), "agreed_leader": agreed, "nodes": nodes}, text)
    return 0 if agreed is not None else 3


# command -> (help, what it did, the LocalCluster method)
SIGNAL_ACTIONS: dict[str, tuple[str, str, Callable[[LocalCluster, str], None]]] = {
    "kill": ("SIGKILL one node and wait until it is gone", "killed", LocalCluster.kill),
    "pause": ("SIGSTOP one node (frozen, sockets open)", "paused", LocalCluster.pause),
    "resume": ("SIGCONT a paused node", "resumed", LocalCluster.resume),
}


def signal_action(action: str) -> Callable[[argparse.Namespace, NodeCommand], int]:
    _, done, method = SIGNAL_ACTIONS[action]

    def run(args: argparse.Namespace, node_command: NodeCommand) -> int:
        cluster = LocalCluster.open(args.data_dir, node_command=node_command)
        pid = cluster.pid(args.node)
        method(cluster, args.node)
        emit(args, {"node": args.node, "action": done, "pid": pid}, f"{done} {args.node} (pid {pid})")
        return 0

    return run


def restart(args: argparse.Namespace, node_command: NodeCommand) -> int:
    cluster = LocalCluster.open(args.data_dir, node_command=node_command)
    pid = cluster.restart(args.node)
    cluster.detach()
    emit(args, {"node": args.node, "action": "restarted", "pid": pid}, f"restarted {args.node} as pid {pid}")
    return 0


def down(args: argparse.Namespace, node_command: NodeCommand) -> int:
    _stopped(args, LocalCluster.open(args.data_dir, node_command=node_command).down())
    return 0


def node_run(args: argparse.Namespace, node_command: NodeCommand) -> int:
    """Become the node (exec): its pid, signals and exit status are then the node's own.

    Exec rather than calling `sessionquorum.store.node.main` here, so that the process's
    argv names `sessionquorum.store` and its data dir: that is what `down` and the pid-file
    check look for before they signal anything (cluster/DESIGN.md).
    """
    config: Path = args.config
    if not config.is_file():
        raise ClusterError(f"no cluster config at {config}")
    data_dir: Path = args.node_data_dir or config.resolve().parent / args.node
    argv = list(node_command(config, args.node, data_dir))
    if args.log_level:
        argv += ["--log-level", args.log_level]
    if getattr(args, "log_format", None):
        argv += ["--log-format", args.log_format]
    os.execv(argv[0], argv)  # noqa: S606 - argv is our own node command, no shell involved


def require_leader(cluster: LocalCluster) -> str:
    leader = cluster.leader_id()
    if leader is None:
        raise ClusterUnavailable("no leader is agreed on right now; try again when `status` shows one")
    return leader

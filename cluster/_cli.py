"""`sessionquorum` (also `python -m sessionquorum.cluster`): the operator's command line.

    init     [--nodes N | --hosts H ...] [--raft-port P --grpc-port P]   config, CA, certificates,
                                         secrets; starts nothing
    up       [--nodes 3|5] [--detach]    prepare + start locally, wait for a leader
    status | down                        look at / stop the local nodes (found through pid files)
    kill | restart | pause | resume NODE
    node run --config F --node ID        become one node (exec; a machine's service entry point)
    config   get | set NAME=VALUE ...    the replicated limits (one log index on every node)
    sessions list PRINCIPAL | revoke (PRINCIPAL | --handle H)
    keys     show | rotate               the at-rest keys; rotate while the cluster runs
    certs    rotate --role app|admin | revoke FILE.pem   (client certificates)
    snapshot save FILE | info FILE | restore FILE --out DIR   backups (_cli_snapshot.py)
    leader   transfer [--to NODE]        hand leadership over (planned maintenance)
    member   list                        the Raft members as the leader sees them
    events   [--after CURSOR] [--count N]  lifecycle events as applied (_cli_events.py)

Parsing lives here, the commands in _cli_local.py (this machine's processes) and
_cli_remote.py (a running cluster). Exit codes, one mapping for every command:
0 ok; 1 failure or nothing found (a cluster that fails to elect a leader in time, with
every node's log tail, is a bug to investigate); 2 usage or configuration error (one line
on stderr, never a traceback); 3 cluster unavailable (no node answers, no agreed leader, or
no definite answer in time: a change may or may not have been applied).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from sessionquorum.client import (
    InvalidArgument,
    OutcomeUnknown,
    PermissionDenied,
    SessionQuorumError,
    Unavailable,
)

from . import (
    _cli_certs,
    _cli_events,
    _cli_keys,
    _cli_local,
    _cli_member,
    _cli_principals,
    _cli_remote,
    _cli_snapshot,
)
from ._errors import BadBackup, ClusterError, ClusterTimeout, ClusterUnavailable
from ._local import NodeCommand, default_node_command
from ._output import error

PROG = _cli_local.PROG
LEADER_TIMEOUT_S = 30.0
CLIENT_TIMEOUT_S = 10.0
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3

_DESCRIPTION = """\
Create, run and inspect a sessionquorum cluster.

A cluster directory (--data-dir, default ./data) holds cluster.json, the Raft password,
a private CA with node and client certificates, and one data dir per node. `init` writes
it (for machines: --hosts, one address per node); `up` runs every node on this machine;
`node run` runs one node of it on its own machine. Commands that talk to the cluster
read its endpoints and client certificate from that directory.
"""
_EPILOG = """\
exit status: 0 ok; 1 failure or nothing found; 2 usage or configuration error;
3 cluster unavailable (no node answers, no leader agreed on by a quorum, or no
definite answer in time: a change may or may not have been applied; safe to repeat).
--json prints one JSON object per line on stdout (notes for people go to stderr).
"""

Handler = Callable[[argparse.Namespace, NodeCommand], int]


def _version() -> str:
    try:
        return metadata.version("sessionquorum")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _common(data_dir: bool = True) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    if data_dir:
        parent.add_argument(
            "--data-dir", type=Path, default=Path("data"), help="cluster directory (default: ./data)"
        )
    parent.add_argument("--json", action="store_true", help="print JSON objects, one per line")
    return parent


def _add(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_: str,
    func: Handler,
    *,
    data_dir: bool = True,
    description: str | None = None,
) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, parents=[_common(data_dir)], help=help_, description=description or help_)
    sub.set_defaults(func=func)
    return sub


def _add_local(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = _add(
        commands,
        "init",
        "write config, CA, certificates and secrets; start nothing",
        _cli_local.init,
        description="Write a cluster directory; reuse it unchanged if one is there already. Without "
        "--hosts, every node is on 127.0.0.1 with ports the kernel chose. With --hosts, node i gets "
        "the i-th address (IP or DNS name, also put in its certificate); give --raft-port and "
        "--grpc-port for fixed ports (the k-th node on a host adds k).",
    )
    init.add_argument("--nodes", type=int, default=None, help="node count (default 3, or len(--hosts))")
    init.add_argument("--hosts", nargs="+", metavar="HOST", help="one address per node, n1 first")
    init.add_argument("--raft-port", type=int, help="Raft port on each host (private network only)")
    init.add_argument("--grpc-port", type=int, help="gRPC (client API) port on each host")
    up = _add(
        commands,
        "up",
        "create or reuse a local cluster, start it, wait for a leader",
        _cli_local.up,
        description="Start every node on this machine. In the foreground, Ctrl-C or SIGTERM "
        "stops them all cleanly; with --detach they keep running (stop them with `down`).",
    )
    up.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    up.add_argument("--detach", action="store_true", help="exit once a leader is elected, nodes keep running")
    up.add_argument("--timeout", type=float, default=LEADER_TIMEOUT_S, help="seconds to wait for a leader")
    status = _add(
        commands,
        "status",
        "one row per node: pid, leader?, term, indexes, sessions",
        _cli_local.status,
        description="Ask every node for its status (in parallel). Exit 3 when no leader is "
        "agreed on by a quorum (an isolated old leader may still claim to lead).",
    )
    status.add_argument(
        "--watch", type=float, metavar="SECONDS", help="ask again every SECONDS until Ctrl-C (exit: the last)"
    )
    _add(
        commands,
        "down",
        "stop every node of the directory (SIGTERM: a leader hands over first; then SIGKILL)",
        _cli_local.down,
    )
    for action, (what, _, _) in _cli_local.SIGNAL_ACTIONS.items():
        _add(commands, action, what, _cli_local.signal_action(action)).add_argument("node", metavar="NODE")
    restart = _add(commands, "restart", "kill one node (if running), then start it", _cli_local.restart)
    restart.add_argument("node", metavar="NODE")
    node = commands.add_parser("node", help="run one node (`node run`)", description="Run one node.")
    node_actions = node.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = node_actions.add_parser(
        "run",
        help="become one node in the foreground (exec)",
        description="Replace this process with the node (python -m sessionquorum.store): its pid, "
        "signals and exit status are the node's. It logs to stderr and stops cleanly on SIGTERM.",
    )
    run.add_argument("--config", type=Path, required=True, help="the cluster.json written by init")
    run.add_argument("--node", required=True, help="this machine's node id (n1, n2, ...)")
    run.add_argument(
        "--data-dir",
        dest="node_data_dir",
        type=Path,
        default=None,
        help="the node's data dir (default: <config dir>/<node id>)",
    )
    run.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ...")
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="default: server.log_format in the config",
    )
    run.set_defaults(func=_cli_local.node_run)


def _add_remote(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = commands.add_parser("config", help="show or change the cluster's replicated limits")
    config_actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add(config_actions, "get", "print the limits in force (JSON)", _cli_remote.config)
    config_set = _add(
        config_actions, "set", "change limits at one log index on every node", _cli_remote.config
    )
    config_set.add_argument("pairs", nargs="+", metavar="NAME=VALUE")
    sessions = commands.add_parser("sessions", help="list or revoke a principal's sessions")
    actions = sessions.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _add(
        actions, "list", "a principal's live sessions (metadata, never tokens)", _cli_remote.sessions_list
    )
    listing.add_argument("principal", metavar="PRINCIPAL")
    revoke = _add(
        actions,
        "revoke",
        "end every session of a principal, or one by --handle; exit 1 when none was live",
        _cli_remote.sessions_revoke,
    )
    who = revoke.add_mutually_exclusive_group(required=True)
    who.add_argument("principal", metavar="PRINCIPAL", nargs="?")
    who.add_argument("--handle", help="a session handle (from `sessions list`)")
    for sub in (listing, revoke):
        sub.add_argument("--timeout", type=float, default=CLIENT_TIMEOUT_S, help="seconds for the call")
    _cli_events.register(commands, _add, CLIENT_TIMEOUT_S)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_local(commands)
    _add_remote(commands)
    _cli_keys.register(commands, _add)
    _cli_certs.register(commands, _add)
    _cli_snapshot.add_parsers(commands, _add)
    _cli_member.add_commands(commands, _add)
    _cli_principals.register(commands, _add)
    return parser


def _exit_code(exc: BaseException) -> tuple[int, str]:
    """The one place that turns an error into an exit status (and the message to print)."""
    if isinstance(exc, ClusterTimeout | BadBackup):
        return EXIT_FAILURE, str(exc)
    if isinstance(exc, ClusterUnavailable | Unavailable):
        return EXIT_UNAVAILABLE, str(exc)
    if isinstance(exc, OutcomeUnknown):
        # No definite answer in time: unavailable to us. Revoking is idempotent, so the
        # operator's next step is the same either way: run it again.
        return EXIT_UNAVAILABLE, f"{exc} (safe to repeat)"
    if isinstance(exc, ClusterError | OSError | InvalidArgument | PermissionDenied):
        return EXIT_USAGE, str(exc)
    return EXIT_FAILURE, str(exc)  # other SessionQuorumErrors


def main(argv: Sequence[str] | None = None, *, node_command: NodeCommand = default_node_command) -> int:
    """Run one command; returns the exit status. `node_command` is replaceable for tests."""
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handler: Handler = args.func
    try:
        return handler(args, node_command)
    except (ClusterError, OSError, SessionQuorumError) as exc:
        code, message = _exit_code(exc)
        error(PROG, message, args)
        return code


def console() -> None:
    """The `sessionquorum` console script."""
    sys.exit(main())

"""The commands that talk to a running cluster: `config get|set`, `sessions list|revoke`.

The endpoints and the admin certificate come from the cluster directory (cluster.json and
tls/admin.pem; a directory made before roles: tls/client.pem), so they work wherever that
directory is: on the machine that ran `init`, or on an operator's machine with a copy.
Sessions go through the public client (`SessionClient`), which finds the leader and
retries; its errors are mapped to exit codes in _cli.py.
"""

from __future__ import annotations

import argparse
import json
import secrets
from dataclasses import fields
from typing import Any

import grpc

from sessionquorum.client import Session, SessionClient, TLSConfig
from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

from ._bootstrap import open_cluster_dir
from ._cli_local import require_leader
from ._errors import ClusterError, ClusterUnavailable
from ._local import LocalCluster, NodeCommand
from ._output import emit, table

CONFIGURE_TIMEOUT_S = 10.0


def _parse_pairs(pairs: list[str]) -> dict[str, int | str]:
    changes: dict[str, int | str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ClusterError(f"expected NAME=VALUE, got {pair!r}")
        changes[name] = int(value) if value.lstrip("-").isdigit() else value
    return changes


def _show_limits(args: argparse.Namespace, limits_json: str) -> None:
    limits = json.loads(limits_json)
    emit(args, limits, json.dumps(limits, indent=2, sort_keys=True))


def config(args: argparse.Namespace, node_command: NodeCommand) -> int:
    """`get` prints the limits in force; `set` changes them at one log index on every node."""
    cluster = LocalCluster.open(args.data_dir, node_command=node_command)
    try:
        leader = require_leader(cluster)
        status = cluster.status(leader)
        if status is None:
            raise ClusterUnavailable(f"the leader {leader} did not answer")
        if args.action == "get":
            _show_limits(args, status.limits_json)
            return 0
        request = pb.ConfigureRequest(
            request_id=pb.RequestId(
                client_id=secrets.token_bytes(16), sequence=1, client_epoch_ms=status.replicated_now_ms
            ),
            limits_json=json.dumps(_parse_pairs(args.pairs)),
        )
        channel = cluster.channel(leader)
        try:
            reply = pb_grpc.SessionStoreStub(channel).Configure(request, timeout=CONFIGURE_TIMEOUT_S)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ClusterUnavailable(f"{exc.code().name}: {exc.details()}") from None
            raise ClusterError(f"refused: {exc.code().name}: {exc.details()}") from None
        finally:
            channel.close()
        _show_limits(args, reply.limits_json)
        return 0
    finally:
        cluster.close_channels()


def _client(args: argparse.Namespace) -> SessionClient:
    prepared = open_cluster_dir(args.data_dir)
    tls = prepared.admin  # listing and revoking any principal's sessions: the admin role
    endpoints = [n.grpc_address for n in prepared.config.nodes]
    return SessionClient(
        endpoints, tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key), timeout_s=args.timeout
    )


def _session_row(session: Session) -> dict[str, Any]:
    # Metadata only: list_sessions returns no attributes, and they may hold secrets anyway.
    return {f.name: getattr(session, f.name) for f in fields(session) if f.name != "attributes"}


def sessions_list(args: argparse.Namespace, node_command: NodeCommand) -> int:
    """A principal's live sessions (metadata only, never tokens); exit 0 even when none."""
    with _client(args) as client:
        found = client.list_sessions(args.principal)
    rows = [_session_row(s) for s in found]
    header = ("handle", "created_ms", "last_access_ms", "idle_timeout_ms", "absolute_deadline_ms", "version")
    lines: list[tuple[object, ...]] = [header, *(tuple(r[k] for k in header) for r in rows)]
    text = table(lines) if rows else f"no live session for principal {args.principal!r}"
    emit(args, {"principal": args.principal, "sessions": rows}, text)
    return 0


def sessions_revoke(args: argparse.Namespace, node_command: NodeCommand) -> int:
    """End every session of a principal, or one by handle; exit 1 when nothing was ended."""
    with _client(args) as client:
        if args.handle is not None:
            existed = client.delete_handle(args.handle)
            revoked = [args.handle] if existed else []
        else:
            revoked = client.revoke_principal(args.principal)
    who = f"handle {args.handle!r}" if args.handle is not None else f"principal {args.principal!r}"
    text = f"revoked {len(revoked)} session(s) of {who}" if revoked else f"no live session for {who}"
    target = {"handle": args.handle} if args.handle is not None else {"principal": args.principal}
    emit(args, {**target, "revoked": revoked}, text)
    return 0 if revoked else 1

"""`snapshot save | restore | info`: backups of a running cluster, and new clusters from them.

    snapshot save FILE [--data-dir D]      the leader's state at one log index -> FILE
    snapshot info FILE                     verify FILE, print its header
    snapshot restore FILE --out DIR [--nodes N | --hosts H ...] [--keep-time]
                                           a NEW cluster directory whose nodes start from FILE

`save` streams `SnapshotSave` from the leader (admin RPC) into a `.partial` file, checks
the leader's sha256 and byte count, renames it, then verifies the file on disk. `restore`
verifies the file and decodes its state before it writes anything, then makes a cluster
directory as `init` would (fresh cluster secret, CA and certificates: a restored cluster
shares no identity with the one saved) and gives every node the same Raft snapshot.
The file format and what a restore keeps are in store/DESIGN.md, "Backups".
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc
from sessionquorum.store import atrest
from sessionquorum.store.atrest import Keys
from sessionquorum.store.backup import BackupCorrupt, BackupInfo, BackupWriter, read_info, restored_capture
from sessionquorum.store.clock import wall_ms
from sessionquorum.store.errors import ConfigError
from sessionquorum.store.journal import fsync_dir
from sessionquorum.store.keyfile import read_keys, write_keys
from sessionquorum.store.raft import seed_snapshot
from sessionquorum.store.snapshot_format import Capture

from ._bootstrap import CONFIG_NAME, KEY_FILE, prepare_cluster_dir
from ._cli_local import require_leader, shown
from ._errors import BadBackup, ClusterError, ClusterUnavailable
from ._local import LocalCluster, NodeCommand
from ._output import emit

SAVE_TIMEOUT_S = 600.0
# Refusals that say "try again later", not "this cannot work".
_LATER = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}

AddCommand = Callable[..., argparse.ArgumentParser]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser], add: AddCommand) -> None:
    snapshot = commands.add_parser("snapshot", help="back up a cluster, or start a new one from a backup")
    actions = snapshot.add_subparsers(dest="action", required=True, metavar="ACTION")
    save_ = add(
        actions,
        "save",
        "write the leader's state at one log index to FILE",
        save,
        description="Ask the leader for a consistent snapshot (every write acknowledged before the "
        "call is in it) and write it to FILE: checksummed, versioned, never pickle. Exit 3 when the "
        "leader is busy with another save or leadership moved: try again.",
    )
    save_.add_argument("file", type=Path, metavar="FILE")
    save_.add_argument("--timeout", type=float, default=SAVE_TIMEOUT_S, help="seconds for the whole save")
    info_ = add(actions, "info", "verify FILE and print what it holds", info, data_dir=False)
    info_.add_argument("file", type=Path, metavar="FILE")
    restore_ = add(
        actions,
        "restore",
        "make a NEW cluster directory whose nodes start from FILE",
        restore,
        data_dir=False,
        description="Verify FILE (exit 1 if it is corrupt, truncated or of another version), then "
        "write a new cluster directory as `init` does, with fresh secrets and certificates, whose "
        "nodes start from the backup's state. Start it with `up --data-dir DIR` or `node run`.",
    )
    restore_.add_argument("file", type=Path, metavar="FILE")
    restore_.add_argument(
        "--out", type=Path, required=True, help="the new cluster directory (absent or empty)"
    )
    restore_.add_argument("--nodes", type=int, default=None, help="node count (default 3, or len(--hosts))")
    restore_.add_argument("--hosts", nargs="+", metavar="HOST", help="one address per node, as for init")
    restore_.add_argument("--raft-port", type=int, help="Raft port on each host")
    restore_.add_argument("--grpc-port", type=int, help="gRPC port on each host")
    restore_.add_argument(
        "--key-file",
        type=Path,
        help="the SOURCE cluster's at-rest key file (its secrets/atrest.keys): sealed values and "
        "keyed token hashes open only with it; required when the backup holds any",
    )
    restore_.add_argument(
        "--keep-time",
        action="store_true",
        help="keep the cluster's time as saved (default: move it to now, so deadlines that passed "
        "since the save have passed)",
    )


def _verified(path: Path) -> BackupInfo:
    try:
        return read_info(path)
    except BackupCorrupt as exc:
        raise BadBackup(f"refusing the backup: {exc}") from None


def _describe(info: BackupInfo) -> str:
    return (
        f"index {info.index} (term {info.term}, leader {info.leader}), {info.sessions} sessions, "
        f"{info.exactly_once_clients} exactly-once clients, {info.file_bytes} bytes, digest {info.digest}, "
        f"from the cluster whose CA has sha256 {info.cluster_ca_sha256 or '(no TLS)'}"
    )


def save(args: argparse.Namespace, node_command: NodeCommand) -> int:
    """Stream the leader's snapshot into FILE; exit 3 if it is busy or leadership moved."""
    cluster = LocalCluster.open(args.data_dir, node_command=node_command)
    started = time.perf_counter()
    try:
        leader = require_leader(cluster)
        channel = cluster.channel(leader)
        try:
            _receive(pb_grpc.SessionStoreStub(channel), args.file, args.timeout)
        finally:
            channel.close()
    finally:
        cluster.close_channels()
    seconds = time.perf_counter() - started
    saved = _verified(args.file)
    data = {**saved.as_json(), "file": str(args.file), "seconds": round(seconds, 3)}
    emit(args, data, f"saved {shown(args.file)}: {_describe(saved)} in {seconds:.1f} s")
    return 0


def _receive(stub: pb_grpc.SessionStoreStub, path: Path, timeout_s: float) -> None:
    writer: BackupWriter | None = None
    try:
        stream = stub.SnapshotSave(pb.SnapshotSaveRequest(), timeout=timeout_s)
        for chunk in stream:
            if writer is None:
                if not chunk.meta:
                    raise ClusterError("the leader's stream did not start with the backup's meta")
                writer = BackupWriter(path, chunk.meta)
            elif chunk.data:
                writer.write(chunk.data)
            elif chunk.state_sha256:
                writer.finish(expected_digest=chunk.state_sha256, expected_bytes=chunk.state_bytes)
                return
        raise ClusterUnavailable("the leader's stream ended before the backup was complete; try again")
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details()
        if code in _LATER:
            raise ClusterUnavailable(f"{code.name}: {details}") from None
        raise ClusterError(f"refused: {code.name}: {details}") from None
    except BackupCorrupt as exc:
        raise BadBackup(f"the backup received is not what the leader sent: {exc}") from None
    finally:
        if writer is not None and not path.exists():
            writer.abort()


def info(args: argparse.Namespace, node_command: NodeCommand) -> int:
    found = _verified(args.file)
    emit(args, {**found.as_json(), "file": str(args.file)}, f"{shown(args.file)}: {_describe(found)}")
    return 0


def _copy_durably(source: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".restore")
    shutil.copyfile(source, tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    fsync_dir(target.parent)


def _source_keys(key_file: Path | None, capture: Capture) -> Keys | None:
    """The source's at-rest keys (copied into the new cluster), or None for fresh ones.

    A backup is useless without the keys its state was sealed and keyed with (a restored
    cluster with fresh keys would find none of its sessions): refuse rather than restore that.
    """
    if key_file is None:
        if any(not atrest.may_be_raw(h) for h in capture.sessions) or any(
            atrest.is_sealed(value) for s in capture.sessions.values() for _, value in s.pairs()
        ):
            raise ClusterError(
                "the backup holds sealed values or keyed token hashes: give the source cluster's "
                "key file with --key-file (its secrets/atrest.keys)"
            )
        return None
    try:
        return read_keys(key_file)
    except (OSError, ConfigError) as exc:
        raise ClusterError(f"cannot read the key file {key_file}: {exc}") from None


def restore(args: argparse.Namespace, node_command: NodeCommand) -> int:
    """A new cluster directory whose every node starts from the backup's state."""
    started = time.perf_counter()
    out: Path = args.out.resolve()
    if (out / CONFIG_NAME).exists() or (out.exists() and any(out.iterdir())):
        raise ClusterError(f"{out} is not empty: a restore makes a new cluster in a new directory")
    hosts: list[str] | None = args.hosts
    nodes = len(hosts) if hosts else args.nodes or 3
    if hosts and args.nodes is not None and args.nodes != len(hosts):
        raise ClusterError(f"--nodes {args.nodes} contradicts the {len(hosts)} --hosts given")
    if (args.raft_port is None) != (args.grpc_port is None):
        raise ClusterError("give both --raft-port and --grpc-port, or neither")
    ports = None if args.raft_port is None else (args.raft_port, args.grpc_port)
    # Everything is checked before anything is written: the checksums, then the state decodes.
    found = _verified(args.file)
    try:
        capture = restored_capture(args.file, found, now_ms=None if args.keep_time else wall_ms())
    except BackupCorrupt as exc:
        raise BadBackup(f"refusing the backup: {exc}") from None
    keys = _source_keys(args.key_file, capture)
    # The backup's limits in the file too: they are in force anyway (replicated state), and a
    # file that agrees spares every node the "limits differ" warning.
    prepared = prepare_cluster_dir(out, nodes, {"limits": found.limits}, hosts=hosts, base_ports=ports)
    config = prepared.config
    try:
        if keys is not None:
            # The source's keys, not fresh ones: the state is sealed and keyed with them.
            write_keys(out / KEY_FILE, keys)
        members = [n.raft_address for n in config.nodes]
        first = out / config.nodes[0].id
        size, digest = seed_snapshot(first, capture, index=found.index, term=found.term, members=members)
        for node in config.nodes[1:]:
            _copy_durably(first / "raft.snapshot", out / node.id / "raft.snapshot")
    except (OSError, ConfigError) as exc:
        # cluster.json is the directory's commit point: without it nobody starts an empty cluster.
        (out / CONFIG_NAME).unlink(missing_ok=True)
        raise ClusterError(f"cannot write the restored cluster in {out}: {exc}") from exc
    seconds = time.perf_counter() - started
    data: dict[str, Any] = {
        "data_dir": str(out),
        "nodes": [n.id for n in config.nodes],
        "index": found.index,
        "sessions": found.sessions,
        "saved_digest": found.digest,
        "restored_digest": digest,
        "source_ca_sha256": found.cluster_ca_sha256,
        "ca_sha256": hashlib.sha256(prepared.tls.ca.read_bytes()).hexdigest(),
        "now_ms": capture.now_ms,
        "snapshot_bytes": size,
        "seconds": round(seconds, 3),
    }
    text = (
        f"restored {found.sessions} sessions at index {found.index} into a new {nodes}-node cluster in "
        f"{shown(out)} ({seconds:.1f} s; digest {digest})\nstart it: sessionquorum up --data-dir {shown(out)}"
    )
    emit(args, data, text)
    return 0

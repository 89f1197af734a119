"""`sessionquorum keys show | rotate`: the at-rest keys of a cluster directory, while it runs.

`rotate` adds a fresh key to every node's key file and then makes it current, in two
phases: first every file learns the new key (not current), then every file makes it
current. A node that already seals under the new key therefore never meets a node that
cannot open it (in the one-file layout of a local cluster the phases coincide). Running
nodes pick the change up without a restart (store/keyfile.py: they look at the file's
mtime at most once a second, at once on an unknown key id). Old keys stay: values sealed
under them open until they are rewritten. Nothing is sent to the cluster, and no key
material is ever printed. On a cluster of machines, run it where the key files are (or
copy the result to each machine in the same two phases).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sessionquorum.store.atrest import Keys
from sessionquorum.store.errors import ConfigError
from sessionquorum.store.keyfile import read_keys, with_current, with_new_key, write_keys

from ._bootstrap import open_cluster_dir
from ._errors import ClusterError
from ._local import NodeCommand
from ._output import emit, table


def _key_files(data_dir: Path) -> list[Path]:
    config = open_cluster_dir(data_dir).config
    files = sorted({p for n in config.nodes if (p := config.key_file_of(n)) is not None})
    if not files:
        raise ClusterError(f"encryption at rest is off in {data_dir / 'cluster.json'}: no key file to rotate")
    return files


def show(args: argparse.Namespace, node_command: NodeCommand) -> int:
    rows: list[dict[str, Any]] = []
    try:
        for path in _key_files(args.data_dir):
            keys = read_keys(path)
            rows.append({"file": str(path), "key_ids": [k for k, _ in keys.keys], "current": keys.current})
    except ConfigError as exc:
        raise ClusterError(str(exc)) from exc
    lines: list[tuple[object, ...]] = [("FILE", "KEY IDS", "CURRENT")]
    lines += [(r["file"], ",".join(map(str, r["key_ids"])), r["current"]) for r in rows]
    emit(args, {"key_files": rows}, table(lines))
    return 0


def rotate(args: argparse.Namespace, node_command: NodeCommand) -> int:
    files = _key_files(args.data_dir)
    try:
        keyrings = {path: read_keys(path) for path in files}
    except ConfigError as exc:
        raise ClusterError(str(exc)) from exc
    new_id = max(k for keys in keyrings.values() for k, _ in keys.keys) + 1
    # Phase 1: every file holds the new key before any node may seal with it.
    first = next(iter(keyrings.values()))
    grown = with_new_key(first, new_id)
    new_key = grown.key(new_id)
    assert new_key is not None
    for path, keys in keyrings.items():
        added = Keys(tuple(sorted((*keys.keys, (new_id, new_key)))), keys.current, keys.token_key)
        keyrings[path] = added
        write_keys(path, added)
    # Phase 2: make it current everywhere.
    for path, keys in keyrings.items():
        write_keys(path, with_current(keys, new_id))
    emit(
        args,
        {"current": new_id, "key_files": [str(p) for p in files]},
        f"key id {new_id} is current in {len(files)} key file(s); running nodes use it within a second",
    )
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], add: Callable[..., Any]) -> None:
    keys = commands.add_parser("keys", help="show or rotate the at-rest keys (no restart)")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    add(actions, "show", "key ids per key file, and the current one (never key material)", show)
    add(
        actions,
        "rotate",
        "add a fresh key to every node's key file and make it current; old keys stay readable",
        rotate,
    )

"""Backup and restore on real nodes: `snapshot save` from a running cluster, `snapshot restore`
into a new one, and the new one serving the same sessions, principals, versions, deadlines
and exactly-once answers (store/DESIGN.md, "Backups")."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from sessionquorum.client import Session, SessionClient, TLSConfig
from sessionquorum.cluster import LocalCluster
from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.store.backup import read_info, restored_capture
from sessionquorum.store.config import Limits
from sessionquorum.store.journal import RaftJournal
from sessionquorum.store.state import SessionMachine

from .conftest import ClientFactory, ClusterFactory
from .helpers import leader_stub, local_read, wait_converged

pytestmark = pytest.mark.cluster

SCRIPT = Path(sys.executable).parent / "sessionquorum"
COMMAND_TIMEOUT_S = 120.0
# No expiry sweep on either cluster: a sweep is a log entry that moves the cluster's time,
# so the digests could not be compared (sessions here live for an hour anyway).
QUIET = {"server": {"sweep_interval_s": 3600.0}}
RETRY_CLIENT = b"backup-retry-cid"
TOKEN_HASH = bytes(range(32))
# pysyncobj's tag for a replicated call in its journal entries (0: REGULAR).
_REGULAR = 0


def cli(*argv: str, expect: int = 0) -> dict[str, Any]:
    done = subprocess.run(
        [str(SCRIPT), *argv, "--json"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert done.returncode == expect, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def _update(sequence: int) -> pb.UpdateRequest:
    return pb.UpdateRequest(
        request_id=pb.RequestId(client_id=RETRY_CLIENT, sequence=sequence),
        token_hash=TOKEN_HASH,
        increment=[pb.Increment(name=b"n", delta=1)],
    )


def _write_history(client: SessionClient, cluster: LocalCluster) -> dict[str, str]:
    """Sessions with principals, updated, rotated, re-bound, deleted; returns name -> token."""
    tokens: dict[str, str] = {}
    for i in range(24):
        created = client.create(
            principal=f"user{i % 5}" if i % 6 else None,
            attributes={"cart": b"x" * i, "i": str(i).encode()},
            idle_timeout_s=1800 + i,
            absolute_timeout_s=3600,
        )
        tokens[f"s{i}"] = created.token
    for i in range(0, 24, 3):
        client.update(tokens[f"s{i}"], set={"seen": b"1"}, increment={"visits": i})
    for i in range(1, 24, 4):
        tokens[f"s{i}"] = client.rotate(tokens[f"s{i}"], principal=f"user{i % 3}").token
    client.update(tokens["s2"], idle_timeout_s=900)
    client.delete(tokens.pop("s5"))
    # An exactly-once entry this test can retry by its request id.
    stub, channel = leader_stub(cluster)
    try:
        stub.Create(
            pb.CreateRequest(
                request_id=pb.RequestId(client_id=b"backup-create-cid", sequence=1),
                token_hash=TOKEN_HASH,
                principal="user0",
                idle_timeout_ms=1_800_000,
                absolute_timeout_ms=3_600_000,
            ),
            timeout=10,
        )
        stub.Update(_update(1), timeout=10)
    finally:
        channel.close()
    return tokens


def _sessions(cluster: LocalCluster, node_id: str, tokens: dict[str, str]) -> dict[str, Session | None]:
    return {name: local_read(cluster, node_id, token) for name, token in tokens.items()}


def _principals(client: SessionClient) -> dict[str, list[Session]]:
    return {p: client.list_sessions(p) for p in (f"user{i}" for i in range(5))}


def test_a_restored_cluster_serves_the_same_sessions_principals_versions_deadlines_and_retries(
    make_cluster: ClusterFactory, make_client: ClientFactory, tmp_path: Path
) -> None:
    source = make_cluster(3, overrides=QUIET)
    client = make_client(source, admin=True)  # listing any principal is an admin call
    tokens = _write_history(client, source)
    digest = wait_converged(source)
    before = _sessions(source, source.wait_for_leader(), tokens)
    principals = _principals(client)

    backup = tmp_path / "backup.sqbak"
    saved = cli("snapshot", "save", str(backup), "--data-dir", str(source.data_dir))
    assert saved["digest"] == digest  # the file's state checksum is the source's state digest
    assert saved["sessions"] == len(tokens) + 1 and saved["exactly_once_clients"] >= 2
    assert cli("snapshot", "info", str(backup))["index"] == saved["index"]

    out = tmp_path / "restored"
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "sessionquorum.cluster",
            "snapshot",
            "restore",
            str(backup),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Fresh at-rest keys would open none of the sealed values and keyed hashes: refused.
    assert refused.returncode != 0 and "--key-file" in refused.stderr
    keys = str(source.data_dir / "secrets" / "atrest.keys")
    restored = cli("snapshot", "restore", str(backup), "--out", str(out), "--key-file", keys)
    assert restored["saved_digest"] == digest and restored["index"] == saved["index"]
    # The restore moved the cluster's time to now (the one change it makes): the state it
    # wrote is the saved one at that time, and the new nodes hold exactly that.
    expected = restored_capture(backup, read_info(backup), now_ms=restored["now_ms"])
    assert expected.digest() == restored["restored_digest"]
    with (out / "cluster.json").open() as f:
        config = json.load(f)
    config.update(QUIET)
    (out / "cluster.json").write_text(json.dumps(config))
    target = LocalCluster.open(out)
    try:
        target.start()
        target.wait_for_leader(60)
        assert wait_converged(target) == restored["restored_digest"]
        leader = target.wait_for_leader()
        assert target.status(leader).last_applied > saved["index"]  # type: ignore[union-attr]
        after = _sessions(target, leader, tokens)
        # Session equality covers attributes, versions, last access and both deadlines.
        assert after == before and all(s is not None for s in after.values())
        tls = target.admin_tls_files
        with SessionClient(
            list(target.endpoints), tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key)
        ) as new_client:
            assert _principals(new_client) == principals
        stub, channel = leader_stub(target)
        try:
            first = stub.Update(_update(1), timeout=10)  # a retry: answered from the table
            assert first.session.version == 2 and first.session.attributes[0].value == b"1"
            again = stub.Update(_update(2), timeout=10)  # a new request id applies
            assert again.session.version == 3
        finally:
            channel.close()
        # The backup names its source by its CA; the new cluster has a CA of its own.
        source_ca = hashlib.sha256((source.data_dir / "tls" / "ca.pem").read_bytes()).hexdigest()
        assert saved["cluster_ca_sha256"] == restored["source_ca_sha256"] == source_ca
        assert restored["ca_sha256"] != source_ca
    finally:
        target.stop()
        target.close_channels()


def _replay(journal_dir: Path, upto: int) -> str:
    """The state digest after applying the node's journal entries 1..upto, as apply would."""
    journal = RaftJournal(journal_dir / "raft.log", journal_dir / "raft.meta", fsync=False)
    machine = SessionMachine(Limits())
    assert journal[0][1] <= 2, "the journal was compacted: raise the test's compaction bound"
    for command, index, _term in journal[: len(journal)]:
        if index > upto:
            break
        if command[0] == _REGULAR:
            call = pickle.loads(command[1:])  # pysyncobj's (method id, args) of our one method
            machine.apply_entry(call[1][0])  # a packed entry too, as the node applies it
    return machine.digest()


def test_a_save_while_writes_continue_holds_exactly_the_state_at_its_header_index(
    make_cluster: ClusterFactory, make_client: ClientFactory, tmp_path: Path
) -> None:
    source = make_cluster(3)
    client = make_client(source)
    stop = threading.Event()
    written = [0]

    def write() -> None:
        token = client.create(principal="writer").token
        for i in range(20_000):  # bounded; stopped long before
            if stop.is_set():
                return
            client.update(token, increment={"n": 1})
            if i % 5 == 0:
                client.create(principal=f"w{i % 7}", attributes={"i": str(i).encode()})
            written[0] += 1

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        source.wait_until(lambda: written[0] >= 50 or None, 60, "writes to begin")
        saved = [
            cli("snapshot", "save", str(tmp_path / f"b{k}"), "--data-dir", str(source.data_dir))
            for k in (0, 1)
        ]
        at_save = written[0]
        source.wait_until(lambda: written[0] >= at_save + 20 or None, 60, "writes to go on after the save")
    finally:
        stop.set()
        writer.join(60)
    assert saved[1]["index"] > saved[0]["index"]  # writes went on between and after the saves
    leader = source.wait_for_leader()
    wait_converged(source)
    source.stop()
    for s in saved:
        assert _replay(source.node_dir(leader), s["index"]) == s["digest"]

"""Encryption at rest on real nodes: nothing a client sent is on disk, and keys rotate live.

Marker values and tokens go in through the public client; afterwards every file of every
node's data dir (journal, snapshots, term/vote meta, node.log) is searched for the values,
the tokens and the token hashes, raw and in hex and base64. With encryption on: zero hits.
The canary runs the same workload on a cluster whose config switches it off and finds them,
so the search is known to work.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from sessionquorum.client import QuotaExceeded, SessionClient, SessionQuorumError
from sessionquorum.cluster import LocalCluster
from sessionquorum.cluster._cli import main as cli_main
from sessionquorum.store.atrest import MAGIC, OVERHEAD_BYTES, Keys
from sessionquorum.store.commands import ATREST_LEVEL
from sessionquorum.store.config import Limits
from sessionquorum.store.keyfile import read_keys, write_keys

from .conftest import LEADER_TIMEOUT_S
from .helpers import local_read, wait_converged

pytestmark = pytest.mark.cluster

# Small compaction so that snapshots are written (and searched) too.
OVERRIDES: dict[str, dict[str, object]] = {"raft": {"compaction_entries": 16}}
SESSIONS = 6
ROTATE_WAIT_S = 20.0


def _forms(raw: bytes) -> list[bytes]:
    """The ways a secret could appear in a file: as is, hex, base64 (standard and URL-safe)."""
    return [raw, raw.hex().encode(), base64.b64encode(raw), base64.urlsafe_b64encode(raw).rstrip(b"=")]


def _workload(client: SessionClient) -> tuple[dict[bytes, str], list[str]]:
    """Sessions with marker values through the public client; returns needles and live tokens."""
    needles: dict[bytes, str] = {}
    live: list[str] = []
    for i in range(SESSIONS):
        secret = b"MARKER-VALUE-" + secrets.token_hex(8).encode()
        note = b"MARKER-NOTE-" + secrets.token_hex(8).encode()
        token = client.create(principal=f"atrest-{i}", attributes={"secret": secret}).token
        client.update(token, set={"note": note}, increment={"visits": 1})
        needles[secret], needles[note] = f"value of session {i}", f"updated value of session {i}"
        if i % 3 == 1:
            old, token = token, client.rotate(token).token
            needles |= {
                f: f"rotated-away token hash {i}" for f in _forms(hashlib.sha256(old.encode()).digest())
            }
        if i % 3 == 2:
            client.delete(token)  # its values stay in the journal: sealed
        else:
            got = client.validate(token)
            assert (got.attributes["secret"], got.attributes["note"]) == (secret, note)
            assert got.attributes["visits"] == b"1"
            live.append(token)
        needles[token.encode()] = f"token {i}"
        needles |= {f: f"token hash {i}" for f in _forms(hashlib.sha256(token.encode()).digest())}
    return needles, live


def _search(cluster: LocalCluster, needles: dict[bytes, str]) -> tuple[list[str], int]:
    """(hits as 'file: what', number of files searched) over every node's data dir."""
    hits: list[str] = []
    files = 0
    for node_id in cluster.node_ids:
        for path in sorted(cluster.node_dir(node_id).rglob("*")):
            if not path.is_file():
                continue
            files += 1
            data = path.read_bytes()
            hits += [f"{path.name} ({node_id}): {what}" for needle, what in needles.items() if needle in data]
    return hits, files


def _limits_are_stated_net_of_the_encryption_overhead(client: SessionClient) -> None:
    net = Limits().max_attribute_value_bytes - OVERHEAD_BYTES
    token = client.create(attributes={"big": b"x" * net}).token
    with pytest.raises(QuotaExceeded, match=f"value is {net + 1} bytes, the limit is {net}"):
        client.update(token, set={"big": b"x" * (net + 1)})
    with pytest.raises(QuotaExceeded, match=f"each value counts {OVERHEAD_BYTES} bytes more"):
        client.update(token, set={f"v{i}": b"x" * net for i in range(4)})
    assert client.validate(token).attributes["big"] == b"x" * net


def _run(
    make_cluster: Callable[..., LocalCluster],
    make_client: Callable[..., SessionClient],
    overrides: dict[str, dict[str, object]],
) -> tuple[LocalCluster, list[str], list[str]]:
    cluster = make_cluster(3, overrides)
    client = make_client(cluster)
    needles, live = _workload(client)
    if "atrest" not in overrides:
        _limits_are_stated_net_of_the_encryption_overhead(client)
    wait_converged(cluster)
    for node_id in cluster.node_ids:  # every node opens what it stores
        for token in live:
            assert local_read(cluster, node_id, token) is not None
    cluster.stop()  # everything written and closed before it is searched
    hits, files = _search(cluster, needles)
    names = [p.name for n in cluster.node_ids for p in cluster.node_dir(n).iterdir()]
    return cluster, hits, [*names, str(files)]


def test_values_tokens_and_token_hashes_are_nowhere_on_disk_or_in_logs(
    make_cluster: Callable[..., LocalCluster], make_client: Callable[..., SessionClient]
) -> None:
    _, hits, names = _run(make_cluster, make_client, OVERRIDES)
    assert any("snapshot" in n for n in names), names  # snapshots were written and searched
    assert any(n == "node.log" for n in names), names
    assert hits == []


def test_canary_with_encryption_off_the_same_search_finds_values_and_token_hashes(
    make_cluster: Callable[..., LocalCluster], make_client: Callable[..., SessionClient]
) -> None:
    _, hits, _ = _run(make_cluster, make_client, {**OVERRIDES, "atrest": {"enabled": False}})
    kinds = {hit.split(": ", 1)[1].split(" of ")[0].split(" hash")[0] for hit in hits}
    assert {"value", "updated value", "token"} <= kinds, hits
    assert any("token hash" in hit for hit in hits), hits
    assert not any(hit.endswith(f"token {i}") for hit in hits for i in range(SESSIONS)), hits  # tokens never


def _journal_holds_key_id(cluster: LocalCluster, node_id: str, key_id: int) -> bool:
    marker = MAGIC + key_id.to_bytes(2, "big")
    files = [p for p in cluster.node_dir(node_id).iterdir() if p.is_file() and p.name != "node.log"]
    return any(marker in p.read_bytes() for p in files)  # the journal (raft.log) or a snapshot


def test_keys_rotate_on_a_running_cluster_leaves_values_of_both_keys_readable(
    make_cluster: Callable[..., LocalCluster], make_client: Callable[..., SessionClient], tmp_path: Path
) -> None:
    cluster = make_cluster(3)
    client = make_client(cluster)
    before = {client.create(attributes={"v": b"under key 1"}).token: b"under key 1"}
    assert cli_main(["keys", "rotate", "--data-dir", str(cluster.data_dir)]) == 0
    after: dict[str, bytes] = {}

    def written_under_key_2() -> bool:
        value = b"after rotation " + secrets.token_hex(4).encode()
        after[client.create(attributes={"v": value}).token] = value
        return _journal_holds_key_id(cluster, cluster.node_ids[0], 2)

    cluster.wait_until(written_under_key_2, ROTATE_WAIT_S, "a value sealed under key id 2")
    assert _journal_holds_key_id(cluster, cluster.node_ids[0], 1)
    wait_converged(cluster)
    for node_id in cluster.node_ids:
        for token, value in (before | after).items():
            session = local_read(cluster, node_id, token)
            assert session is not None and session.attributes["v"] == value
    for token, value in before.items():  # a linearizable read, and an update under the new key
        client.update(token, set={"w": b"rewritten"})
        assert dict(client.validate(token).attributes) == {"v": value, "w": b"rewritten"}


def test_a_key_missing_from_the_key_file_is_a_clear_error_and_the_node_keeps_serving(
    make_cluster: Callable[..., LocalCluster], make_client: Callable[..., SessionClient]
) -> None:
    cluster = make_cluster(3)
    client = make_client(cluster)
    old = client.create(attributes={"v": b"under key 1"}).token
    assert cli_main(["keys", "rotate", "--data-dir", str(cluster.data_dir)]) == 0
    path = cluster.config.key_file_of(cluster.config.nodes[0])
    assert path is not None
    keys = read_keys(path)
    write_keys(path, Keys(tuple(k for k in keys.keys if k[0] != 1), keys.current, keys.token_key))
    errors: list[str] = []

    def refused() -> bool:
        try:
            client.validate(old)
        except SessionQuorumError as exc:
            errors.append(str(exc))
            return True
        return False

    cluster.wait_until(refused, ROTATE_WAIT_S, "the node to drop key id 1 and refuse the read")
    assert "key id 1" in errors[-1]
    new = client.create(attributes={"v": b"under key 2"}).token
    assert client.validate(new).attributes["v"] == b"under key 2"  # the node serves on
    write_keys(path, keys)
    cluster.wait_until(lambda: not refused(), ROTATE_WAIT_S, "key id 1 back in use")
    assert client.validate(old).attributes["v"] == b"under key 1"
    assert cluster.reap() == {}
    log = "".join((cluster.node_dir(n) / "node.log").read_text() for n in cluster.node_ids)
    assert "a stored value did not open" in log and "Traceback" not in log


@pytest.mark.slow  # make test's budget; test_rolling_upgrade.py covers the switch to level 5
def test_sessions_from_before_the_upgrade_stay_valid_and_new_ones_are_keyed(
    request: pytest.FixtureRequest, tmp_path: Path, make_client: Callable[..., SessionClient]
) -> None:
    levels: dict[str, int] = {}
    old_level = ATREST_LEVEL - 1

    def command(config: Path, node_id: str, data_dir: Path) -> Sequence[str]:
        level = str(levels.get(node_id, old_level))
        return [sys.executable, "-m", "sessionquorum.store", "--config", str(config), "--node", node_id,
                "--data-dir", str(data_dir), "--command-level", level]  # fmt: skip

    cluster = LocalCluster(tmp_path / "c", 3, node_command=command)
    request.node._sq_clusters = [cluster]
    with cluster:
        cluster.start()
        cluster.wait_for_leader(LEADER_TIMEOUT_S)
        client = make_client(cluster)
        legacy = client.create(principal="old", attributes={"v": b"LEGACY-PLAINTEXT"}).token
        for node_id in cluster.node_ids:  # the rolling upgrade
            levels[node_id] = ATREST_LEVEL
            cluster.restart(node_id)
            cluster.wait_until(
                lambda n=node_id: (s := cluster.status(n)) is not None and s.ready, 30.0, "ready"
            )
        cluster.wait_until(
            lambda: (
                (s := cluster.status(cluster.wait_for_leader())) is not None
                and s.cluster_command_level == ATREST_LEVEL
            ),
            30.0,
            "every member at level 5",
        )
        assert client.validate(legacy).attributes["v"] == b"LEGACY-PLAINTEXT"  # found by its raw hash
        client.update(legacy, set={"w": b"SEALED-AFTER-UPGRADE"})
        assert dict(client.validate(legacy).attributes) == {
            "v": b"LEGACY-PLAINTEXT",
            "w": b"SEALED-AFTER-UPGRADE",
        }
        rotated = client.rotate(legacy).token  # moves the session to a keyed hash
        fresh = client.create(attributes={"v": b"SEALED-NEW"}).token
        for token in (rotated, fresh):
            assert client.validate(token).attributes["v"] in (b"LEGACY-PLAINTEXT", b"SEALED-NEW")
        wait_converged(cluster)
        cluster.stop()
        needles = {b"SEALED-AFTER-UPGRADE": "value set after the upgrade", b"SEALED-NEW": "new value"}
        for token in (rotated, fresh):
            needles |= {f: "hash of a session keyed after the upgrade" for f in _forms(_sha(token))}
        hits, _ = _search(cluster, needles)
        assert hits == []
        canary, _ = _search(cluster, {b"LEGACY-PLAINTEXT": "written before the upgrade"})
        assert canary, "the entry from before the upgrade is still in the journal as it was written"


def _sha(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()

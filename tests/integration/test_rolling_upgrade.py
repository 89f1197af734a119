"""A cluster upgraded node by node under load: no node meets an entry it cannot apply.

The old release is this code started with `--command-level 1` (it refuses level-2 entries as
undecodable and would stop with exit 70, which tests/unit/test_state_longlife.py shows).
While any member is at level 1 the leader must not propose a level-2 command: the Configure
RPC is refused with FAILED_PRECONDITION; once every member advertised level 2, it works.
Likewise for packed log entries (level 5, store/_packing.py): concurrent writers make the
leader pack once every member can apply them, and not one packed entry before.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest

from sessionquorum.client import OutcomeUnknown, SessionClient, TLSConfig
from sessionquorum.cluster import LocalCluster
from sessionquorum.store.commands import SUPPORTED_LEVEL

from .conftest import LEADER_TIMEOUT_S
from .helpers import leader_stub, pb, wait_converged

pytestmark = pytest.mark.cluster

WRITES_PER_BURST = 5
# Writers sharing one client: their calls meet at the leader, which packs them when allowed.
WRITERS = 4


def packed_counts(cluster: LocalCluster) -> dict[str, tuple[int, int]]:
    """Per running node: (packed entries applied, proposed) since its process started."""
    out = {}
    for node_id, s in cluster.statuses().items():
        if s is not None:
            out[node_id] = (s.packed_entries_applied, s.packed_entries_proposed)
    return out


def configure(cluster: LocalCluster, sequence: int) -> pb.ConfigureResponse:
    api, _ = leader_stub(cluster)
    return api.Configure(
        pb.ConfigureRequest(
            request_id=pb.RequestId(client_id=b"upgrader", sequence=sequence),
            limits_json=json.dumps({"max_sessions_per_principal": 7}),
        ),
        timeout=10,
    )


def test_rolling_upgrade_under_load_never_stops_an_old_node(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    levels: dict[str, int] = {}

    def command(config: Path, node_id: str, data_dir: Path) -> Sequence[str]:
        return [sys.executable, "-m", "sessionquorum.store", "--config", str(config), "--node", node_id,
                "--data-dir", str(data_dir), "--command-level", str(levels.get(node_id, 1))]  # fmt: skip

    cluster = LocalCluster(tmp_path / "c", 3, node_command=command)
    request.node._sq_clusters = [cluster]
    with cluster:
        cluster.start()
        cluster.wait_for_leader(LEADER_TIMEOUT_S)
        tls = cluster.tls_files
        stop = threading.Event()
        done: list[int] = []
        unknown: list[str] = []
        failed: list[BaseException] = []

        client = SessionClient(
            list(cluster.endpoints), tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key), timeout_s=20.0
        )

        def load(n: int) -> None:
            while not stop.is_set() and len(done) < 100_000:
                try:
                    token = client.create(principal=f"p{n}").token
                    for _ in range(WRITES_PER_BURST):
                        client.update(token, increment={"n": 1})
                    done.append(1)
                except OutcomeUnknown as exc:
                    unknown.append(str(exc))
                except BaseException as exc:
                    failed.append(exc)
                    return

        writers = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(WRITERS)]
        for writer in writers:
            writer.start()
        try:
            for step, node_id in enumerate(cluster.node_ids):
                before = len(done)
                levels[node_id] = SUPPORTED_LEVEL
                cluster.restart(node_id)
                cluster.wait_until(
                    lambda n=node_id: (s := cluster.status(n)) is not None and s.ready,
                    30.0,
                    f"{node_id} ready",
                )
                cluster.wait_until(
                    lambda b=before: len(done) > b + 3 or failed, 60.0, "writes after the restart"
                )
                if step < len(cluster.node_ids) - 1:
                    # The gate: an older member is still there, so no level-2 command may enter the log.
                    with pytest.raises(grpc.RpcError) as info:
                        configure(cluster, step + 1)
                    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
                    found = {str(m.key): str(m.value) for m in info.value.trailing_metadata() or ()}
                    assert found.get("sq-upgrade") == "pending"  # the client answers, not redirects
                    assert "level" in (info.value.details() or "")
                    # Level 5's rules (store/secops.py) stay off while an old member applies.
                    assert not any((st := cluster.status(n)) and st.security_ops for n in cluster.node_ids)
                    # No packed entry while an old member is there (it would stop with exit 70).
                    assert all(c == (0, 0) for c in packed_counts(cluster).values()), packed_counts(cluster)
            cluster.wait_until(
                lambda: (
                    (s := cluster.status(cluster.wait_for_leader())) is not None
                    and s.cluster_command_level == SUPPORTED_LEVEL
                ),
                30.0,
                "every member to advertise this release's level",
            )
            reply = configure(cluster, 10)
            assert json.loads(reply.limits_json)["max_sessions_per_principal"] == 7
            # Once every member has level 5, the leader switches its rules on everywhere.
            cluster.wait_until(
                lambda: all((st := cluster.status(n)) and st.security_ops for n in cluster.node_ids),
                30.0,
                "session-security operations on every node",
            )
            # Every member at this release: the same writers now share packed entries.
            cluster.wait_until(
                lambda: any(applied > 0 for applied, _ in packed_counts(cluster).values()) or failed,
                60.0,
                "a packed entry once every member can apply one",
            )
        finally:
            stop.set()
            for writer in writers:
                writer.join(60)
            client.close()
        assert not failed, failed
        assert cluster.reap() == {}, "a node stopped during the upgrade"
        for node_id in cluster.node_ids:
            log_text = (cluster.node_dir(node_id) / "node.log").read_text()
            assert "stopping this node" not in log_text
        wait_converged(cluster)
        assert len(done) > 10
        counts = packed_counts(cluster)
        assert len(counts) == 3 and all(applied > 0 for applied, _ in counts.values()), counts

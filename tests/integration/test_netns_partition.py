"""Real network partitions: each node in its own network namespace, links cut by iptables DROP.

Needs root, iproute2 and iptables (Debian packages iproute2, iptables); skipped otherwise.
The test process stays in the root namespace and reaches every node over the bridge, so
clients and Status calls are never partitioned: only node-to-node links are. Every wait
is bounded, and each test checks that teardown left no namespace, link or rule behind.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionquorum.client import Created, SessionClient, TLSConfig
from sessionquorum.cluster import ClusterError, LocalCluster
from tests.chaos.framework._netns import NetnsNetwork, leftovers, netns_cluster, netns_unavailable_reason

from .helpers import local_read, wait_converged

pytestmark = pytest.mark.cluster

LEADER_TIMEOUT_S = 15.0
CLIENT_TIMEOUT_S = 15.0
PROBE_TIMEOUT_S = 0.5


@pytest.fixture(autouse=True)
def _needs_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"needs root and iproute2/iptables: {reason}")


@pytest.fixture
def root_iptables() -> Iterator[str]:
    """The root namespace's ruleset before the test; the test checks it is unchanged after."""
    yield _iptables_save()


def _iptables_save() -> str:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True, timeout=10).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith("#"))  # drop timestamps


def _client(cluster: LocalCluster) -> SessionClient:
    tls = cluster.tls_files
    return SessionClient(
        list(cluster.endpoints),
        tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key),
        timeout_s=CLIENT_TIMEOUT_S,
    )


def _leader_other_than(cluster: LocalCluster, old: str) -> str:
    return cluster.wait_for_new_leader(old, LEADER_TIMEOUT_S)


def _holds(cluster: LocalCluster, node_id: str, created: Created) -> bool:
    return local_read(cluster, node_id, created.token) is not None


def _assert_nothing_left(prefix: str, pids: list[int], iptables_before: str) -> None:
    assert leftovers(prefix) == {"namespaces": [], "links": []}
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert prefix not in netns
    assert prefix not in links
    assert _iptables_save() == iptables_before
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)


def test_isolated_leader_replaced_and_rejoins_after_heal(
    request: pytest.FixtureRequest, tmp_path: Path, root_iptables: str
) -> None:
    with netns_cluster(tmp_path / "cluster", 3) as (cluster, net):
        request.node._sq_clusters = [cluster]  # log tails on failure (conftest)
        cluster.start()
        pids = [pid for n in cluster.node_ids if (pid := cluster.pid(n)) is not None]
        # `ip netns exec` execs the node: the pid we signal is the interpreter's, not ip's.
        assert [Path(f"/proc/{pid}/exe").resolve() for pid in pids] == [Path(sys.executable).resolve()] * 3
        old = cluster.wait_for_leader(LEADER_TIMEOUT_S)
        with _client(cluster) as client:
            before = client.create(attributes={"phase": b"before"})

            net.isolate(old)
            others = [n for n in cluster.node_ids if n != old]
            assert net.probe(old, timeout_s=PROBE_TIMEOUT_S) == dict.fromkeys(others, False)
            assert net.probe(others[0], timeout_s=PROBE_TIMEOUT_S) == {old: False, others[1]: True}
            assert net.probe(None, timeout_s=PROBE_TIMEOUT_S) == dict.fromkeys(cluster.node_ids, True)
            new = _leader_other_than(cluster, old)
            assert cluster.status(old) is not None  # the test process still reaches the isolated node

            during = client.create(attributes={"phase": b"during"})  # a client that knows every endpoint
            assert _holds(cluster, new, during)
            assert not _holds(cluster, old, during)  # the isolated node cannot have it

            assert str(net.heal()) == "healed"
            wait_converged(cluster)
            assert all(_holds(cluster, n, s) for n in cluster.node_ids for s in (before, during))
        cluster.stop()
        # SIGTERM reached each node itself (not just `ip`): its own handler logged the stop.
        assert all(f"stopping node {n}" in cluster.log_tail(n) for n in cluster.node_ids)
        prefix = net.prefix
    _assert_nothing_left(prefix, pids, root_iptables)


def test_majority_minority_split_minority_catches_up_after_heal(
    request: pytest.FixtureRequest, tmp_path: Path, root_iptables: str
) -> None:
    with netns_cluster(tmp_path / "cluster", 3) as (cluster, net):
        request.node._sq_clusters = [cluster]
        cluster.start()
        pids = [pid for n in cluster.node_ids if (pid := cluster.pid(n)) is not None]
        leader = cluster.wait_for_leader(LEADER_TIMEOUT_S)
        follower, minority = (n for n in cluster.node_ids if n != leader)

        partition = net.split([[leader, follower], [minority]])
        assert partition.blocked(minority) == tuple(n for n in cluster.node_ids if n != minority)
        assert f"-A INPUT -s {net.layout.address(minority)}/32 -j DROP" in net.rules(leader)
        with _client(cluster) as client:
            written = client.create(attributes={"side": b"majority"})
            assert cluster.wait_until(
                lambda: cluster.leader_id() in (leader, follower), LEADER_TIMEOUT_S, "a majority-side leader"
            )
            # Acknowledged once the leader applied it; the follower applies on the next heartbeat.
            cluster.wait_until(
                lambda: _holds(cluster, follower, written), LEADER_TIMEOUT_S, "the follower's copy"
            )
            assert not _holds(cluster, minority, written)

            net.heal()
            assert "DROP" not in net.rules(leader)
            wait_converged(cluster)
            assert _holds(cluster, minority, written)
        prefix = net.prefix
    _assert_nothing_left(prefix, pids, root_iptables)


def test_network_removed_after_a_failure_inside_and_by_finalizer(root_iptables: str) -> None:
    with pytest.raises(RuntimeError, match="boom"), NetnsNetwork(nodes=2) as net:
        net.isolate("n1")
        prefix = net.prefix
        raise RuntimeError("boom")
    assert leftovers(prefix) == {"namespaces": [], "links": []}

    forgotten = NetnsNetwork(nodes=2)
    prefix = forgotten.prefix
    assert len(leftovers(prefix)["namespaces"]) == 2
    del forgotten
    gc.collect()
    assert leftovers(prefix) == {"namespaces": [], "links": []}
    assert _iptables_save() == root_iptables


def test_prefix_in_use_refused_without_touching_the_owner() -> None:
    with NetnsNetwork(nodes=2) as owner:
        with pytest.raises(ClusterError, match="in use"):
            NetnsNetwork(owner.prefix, 2)
        assert len(leftovers(owner.prefix)["namespaces"]) == 2
        assert owner.probe("n1", timeout_s=PROBE_TIMEOUT_S) == {"n2": True}

"""The pure parts of network partitions: which links a shape cuts, the rules, the names, the hosts.

Nothing here needs root: partitions are values (tests/chaos/framework/_partition.py), the namespace
layout is names and addresses (NetnsLayout), and the per-node hosts of a cluster directory
are files. tests/integration/test_netns_partition.py applies them to real namespaces.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import sys
from itertools import combinations
from pathlib import Path

import pytest
from cryptography import x509

from sessionquorum.cluster import ClusterError, LocalCluster, _local, _pidfiles, prepare_cluster_dir
from tests.chaos.framework import _netns
from tests.chaos.framework._netns import IFNAME_MAX, NetnsLayout, netns_unavailable_reason, new_prefix
from tests.chaos.framework._partition import Partition, bridge, healed, iptables_rules, isolate, ring, split

N3 = ("n1", "n2", "n3")
N5 = ("n1", "n2", "n3", "n4", "n5")
ADDRESSES = {f"n{i}": f"10.213.7.{10 + i}" for i in range(1, 10)}


def _majority(p: Partition, node: str) -> bool:
    return len(p.sees(node)) > len(p.nodes) // 2


def _symmetric(p: Partition) -> bool:
    return all((a in p.sees(b)) == (b in p.sees(a)) for a, b in combinations(p.nodes, 2))


# -- shapes -------------------------------------------------------------------------------


def test_split_cuts_exactly_the_pairs_across_groups() -> None:
    p = split(N5, [["n1", "n2"], ["n3", "n4", "n5"]])

    assert p.cut == {frozenset((a, b)) for a in ("n1", "n2") for b in ("n3", "n4", "n5")}
    assert p.sees("n1") == ("n1", "n2")
    assert p.blocked("n4") == ("n1", "n2")
    assert p.components() == (("n1", "n2"), ("n3", "n4", "n5"))
    assert str(p) == "split: n1 n2 | n3 n4 n5"


def test_isolate_cuts_the_node_from_every_peer_and_nothing_else() -> None:
    p = isolate(N3, "n2")

    assert p.blocked("n2") == ("n1", "n3")
    assert p.can_talk("n1", "n3")
    assert str(p) == "isolate n2: n1 n3 | n2"


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([["n1"], ["n2", "n9"]], "unknown node"),
        ([["n1", "n2"], ["n2", "n3"]], "more than one group"),
        ([["n1"], ["n2"]], "in no group"),
        ([["n1", "n2", "n3"], []], "empty group"),
    ],
)
def test_split_bad_groups_rejected(groups: list[list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split(N3, groups)


def test_healed_cuts_nothing_and_says_so() -> None:
    p = healed(N3)

    assert p.healed and not p.cut
    assert str(p) == "healed"
    assert all(p.sees(n) == N3 for n in N3)


def test_bridge_of_five_two_halves_both_see_the_middle() -> None:
    p = bridge(N5)

    assert p.sees("n3") == N5
    assert p.sees("n1") == p.sees("n2") == ("n1", "n2", "n3")
    assert p.sees("n4") == p.sees("n5") == ("n3", "n4", "n5")
    assert p.cut == {frozenset((a, b)) for a in ("n1", "n2") for b in ("n4", "n5")}
    assert all(_majority(p, n) for n in N5)  # every node sees 3 of 5: both halves may elect
    assert p.components() is None  # not transitive: no clean groups
    assert str(p).startswith("bridge via n3: n1 sees n1 n2 n3;")


def test_bridge_of_two_rejected() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        bridge(("n1", "n2"))


@pytest.mark.parametrize("count", [4, 5, 8, 9])
def test_ring_every_node_sees_a_distinct_majority(count: int) -> None:
    nodes = tuple(f"n{i}" for i in range(1, count + 1))
    p = ring(nodes)

    assert all(_majority(p, n) for n in nodes)
    seen = [frozenset(p.sees(n)) for n in nodes]
    assert len(set(seen)) == count  # no two nodes see the same majority
    assert all(len(s) < count for s in seen)  # and nobody sees everyone
    assert _symmetric(p)


def test_ring_of_five_each_node_sees_its_two_neighbours() -> None:
    p = ring(N5)

    assert p.sees("n1") == ("n1", "n2", "n5")
    assert p.sees("n3") == ("n2", "n3", "n4")
    assert p.blocked("n1") == ("n3", "n4")


def test_ring_shuffled_order_keeps_distinct_majorities() -> None:
    order = ("n3", "n1", "n5", "n2", "n4")
    p = ring(N5, order)

    assert p.sees("n1") == ("n1", "n3", "n5")
    assert len({frozenset(p.sees(n)) for n in N5}) == 5
    assert all(_majority(p, n) for n in N5)


@pytest.mark.parametrize("count", [2, 3, 6, 7])
def test_ring_impossible_with_symmetric_links_rejected(count: int) -> None:
    with pytest.raises(ValueError, match="majorities ring"):
        ring(tuple(f"n{i}" for i in range(1, count + 1)))


def test_ring_order_must_list_every_node() -> None:
    with pytest.raises(ValueError, match="every node once"):
        ring(N5, ("n1", "n2", "n3", "n4", "n4"))


# -- rules --------------------------------------------------------------------------------


def test_rules_drop_both_directions_for_each_cut_peer() -> None:
    rules = iptables_rules(isolate(N3, "n1"), "n1", ADDRESSES)

    drops = [line for line in rules.splitlines() if line.startswith("-A")]
    assert drops == [
        "-A INPUT -s 10.213.7.12/32 -j DROP",
        "-A OUTPUT -d 10.213.7.12/32 -j DROP",
        "-A INPUT -s 10.213.7.13/32 -j DROP",
        "-A OUTPUT -d 10.213.7.13/32 -j DROP",
    ]


def test_rules_of_the_other_side_cut_only_the_isolated_node() -> None:
    rules = iptables_rules(isolate(N3, "n1"), "n2", ADDRESSES)

    assert "10.213.7.11/32" in rules
    assert "10.213.7.13" not in rules


def test_rules_replace_whole_table_with_accepting_policies() -> None:
    rules = iptables_rules(healed(N3), "n1", ADDRESSES)

    assert rules == "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"


def test_rules_never_name_an_address_outside_the_peers() -> None:
    layout = NetnsLayout("sqab12", N5, 7)
    for p in (ring(N5), bridge(N5), split(N5, [["n1", "n2"], ["n3", "n4", "n5"]])):
        for node in N5:
            rules = iptables_rules(p, node, layout.addresses)
            named = {w.split("/")[0] for w in rules.split() if w.endswith("/32")}
            assert named <= set(layout.addresses.values()) - {layout.address(node)}
            assert layout.bridge_ip not in named  # clients are never partitioned


# -- layout -------------------------------------------------------------------------------


def test_layout_addresses_in_one_private_24() -> None:
    layout = NetnsLayout("sqab12", N3, 213)

    assert layout.subnet == ipaddress.IPv4Network("10.213.213.0/24")
    assert layout.bridge_ip == "10.213.213.1"
    assert layout.addresses == {"n1": "10.213.213.11", "n2": "10.213.213.12", "n3": "10.213.213.13"}
    assert all(ipaddress.ip_address(a) in layout.subnet for a in layout.addresses.values())


def test_layout_names_share_the_prefix_and_fit_ifnamsiz() -> None:
    nodes = tuple(f"n{i}" for i in range(1, 201))
    layout = NetnsLayout("sq" + "f" * 6, nodes, 0)

    names = layout.link_names()
    assert len(names) == len(set(names)) == 201
    assert max(len(n) for n in names) <= IFNAME_MAX
    assert all(n.startswith(layout.prefix) for n in names + layout.namespaces())
    assert layout.bridge == "sqffffffbr"
    assert layout.host_veth("n200") == "sqffffffn200h"
    assert layout.namespace("n7") == "sqffffff-n7"


@pytest.mark.parametrize("prefix", ["", "s", "SQ12", "sq-1", "sq1234567", "1sq"])
def test_layout_bad_prefix_rejected(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        NetnsLayout(prefix, N3, 0)


def test_layout_unknown_node_rejected() -> None:
    with pytest.raises(ClusterError, match="unknown node"):
        NetnsLayout("sqab12", N3, 0).address("n4")


def test_new_prefix_is_a_valid_unique_prefix() -> None:
    prefixes = {new_prefix() for _ in range(20)}

    assert len(prefixes) > 1
    for prefix in prefixes:
        NetnsLayout(prefix, N5, 0)  # valid


# -- cluster directory on namespace hosts ---------------------------------------------------


def test_prepare_with_hosts_puts_addresses_and_san_on_each_host(tmp_path: Path) -> None:
    hosts = ["10.213.7.11", "10.213.7.12", "10.213.7.13"]

    config = prepare_cluster_dir(tmp_path, 3, hosts=hosts).config

    for node, host in zip(config.nodes, hosts, strict=True):
        assert node.raft_address.startswith(f"{host}:")
        assert node.grpc_address.startswith(f"{host}:")
        assert node.tls_cert is not None
        cert = x509.load_pem_x509_certificate(node.tls_cert.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ipaddress.ip_address(host) in sans.get_values_for_type(x509.IPAddress)


def test_prepare_reuse_with_other_hosts_refused_and_none_accepted(tmp_path: Path) -> None:
    prepare_cluster_dir(tmp_path, 3, hosts=["10.213.7.11", "10.213.7.12", "10.213.7.13"])

    with pytest.raises(ClusterError, match="made for hosts"):
        prepare_cluster_dir(tmp_path, 3, hosts=["10.213.8.11", "10.213.8.12", "10.213.8.13"])
    assert not prepare_cluster_dir(tmp_path, 3).created
    assert not prepare_cluster_dir(tmp_path, 3, hosts=["10.213.7.11", "10.213.7.12", "10.213.7.13"]).created


@pytest.mark.parametrize("hosts", [["10.213.7.11"], ["10.213.7.11", "no host", "10.213.7.13"], "10.213.7.11"])
def test_prepare_bad_hosts_refused_before_writing(tmp_path: Path, hosts: list[str]) -> None:
    with pytest.raises(ClusterError, match="hosts"):
        prepare_cluster_dir(tmp_path / "c", 3, hosts=hosts)
    assert not (tmp_path / "c").exists()


def test_prepare_without_hosts_still_on_loopback(tmp_path: Path) -> None:
    raw = json.loads(prepare_cluster_dir(tmp_path, 3).config_path.read_text())

    assert all(
        n["raft"].startswith("127.0.0.1:") and n["grpc"].startswith("127.0.0.1:") for n in raw["nodes"]
    )


# -- node wrapper ---------------------------------------------------------------------------

SLEEPER = "import time; time.sleep(60)"


def _stand_in(config: Path, node_id: str, data_dir: Path) -> list[str]:
    return [sys.executable, "-c", SLEEPER, "sessionquorum.store", str(data_dir), node_id]


def test_node_wrapper_wraps_argv_and_the_pid_is_the_node(tmp_path: Path) -> None:
    # `env` execs its command like `ip netns exec` does: the pid must end up being the node's.
    wrapped: list[str] = []

    def wrapper(node_id: str, argv: list[str]) -> list[str]:
        wrapped.append(node_id)
        return ["env", "SQ_WRAPPED=1", *argv]

    cluster = LocalCluster(tmp_path / "c", 2, node_command=_stand_in, node_wrapper=wrapper)
    try:
        cluster.start()
        pid = cluster.pid("n1")
        assert pid is not None
        assert Path(f"/proc/{pid}/exe").resolve() == Path(sys.executable).resolve()
        assert b"SQ_WRAPPED=1" in Path(f"/proc/{pid}/environ").read_bytes()
        assert wrapped == ["n1", "n2"]
    finally:
        codes = cluster.stop(timeout_s=2.0)
    assert codes == {"n1": -signal.SIGTERM, "n2": -signal.SIGTERM}


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def test_node_wrapper_that_forks_instead_of_exec_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_local, "EXEC_TIMEOUT_S", 0.5)

    def forking(node_id: str, argv: list[str]) -> list[str]:
        return ["sh", "-c", '"$@"; exit $?', "sh", *argv]  # the node runs as the shell's child

    cluster = LocalCluster(tmp_path / "c", 1, node_command=_stand_in, node_wrapper=forking)
    try:
        with pytest.raises(ClusterError, match="must exec the node command"):
            cluster.start()
        assert cluster.pid("n1") is None
        # SIGKILL to the group is asynchronous: on a busy machine the forked node may still
        # show its command line for a moment after killpg returns (failed twice under load).
        assert _pidfiles.wait_for(
            lambda: not any(_pidfiles.is_node_process(pid, cluster.node_dir("n1")) for pid in _all_pids()),
            5.0,
        )
    finally:
        cluster.stop(timeout_s=1.0)


# -- availability -----------------------------------------------------------------------------


def test_unavailable_reason_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_netns.os, "geteuid", lambda: 1000)

    assert netns_unavailable_reason() == "not running as root"


def test_unavailable_reason_names_missing_tools_and_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(_netns.shutil, "which", lambda tool: None if tool.startswith("iptables") else "/x")

    reason = netns_unavailable_reason()

    assert reason is not None
    assert "iptables, iptables-restore" in reason and "iproute2, iptables" in reason

"""A new node's entry and certificate in a cluster directory (`member add`)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from cryptography import x509

from sessionquorum.cluster import ClusterError
from sessionquorum.cluster._bootstrap import prepare_cluster_dir
from sessionquorum.cluster._grow import add_node_entry, drop_node_entry, next_node_id


def _sans(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in names]


def test_a_node_elsewhere_gets_a_certificate_for_its_host_and_its_entry(tmp_path: Path) -> None:
    prepare_cluster_dir(tmp_path, 3)
    node = add_node_entry(tmp_path, None, "10.0.0.4:7100", "10.0.0.4:7200")
    assert node == "n4"
    entry = json.loads((tmp_path / "cluster.json").read_text())["nodes"][-1]
    assert entry["raft"] == "10.0.0.4:7100" and "metrics" not in entry
    assert str(ipaddress.ip_address("10.0.0.4")) in _sans(tmp_path / "tls" / "n4.pem")
    assert (tmp_path / "n4").is_dir()


def test_a_taken_address_or_id_or_a_bad_id_is_refused_and_nothing_written(tmp_path: Path) -> None:
    prepared = prepare_cluster_dir(tmp_path, 3)
    before = (tmp_path / "cluster.json").read_text()
    for node_id, raft in (("n2", "10.0.0.9:1"), ("n9", prepared.config.nodes[0].raft_address), ("x y", None)):
        with pytest.raises(ClusterError):
            add_node_entry(tmp_path, node_id, raft, "10.0.0.9:2" if raft else None)
    assert (tmp_path / "cluster.json").read_text() == before


def test_a_dropped_node_leaves_no_entry_certificate_or_data_dir_and_its_id_may_come_back(
    tmp_path: Path,
) -> None:
    prepare_cluster_dir(tmp_path, 3)
    node = add_node_entry(tmp_path)
    (tmp_path / node / "raft.log").write_bytes(b"old log")
    drop_node_entry(tmp_path, node)
    assert not (tmp_path / node).exists() and not (tmp_path / "tls" / f"{node}.pem").exists()
    assert next_node_id(tmp_path) == node  # starts empty if used again

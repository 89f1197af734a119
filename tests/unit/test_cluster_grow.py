"""A new node's entry and certificate in a cluster directory (`member add`)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import cast

import pytest
from cryptography import x509

from sessionquorum.cluster import ClusterError, _grow
from sessionquorum.cluster._bootstrap import prepare_cluster_dir
from sessionquorum.cluster._errors import ClusterUnavailable
from sessionquorum.cluster._grow import add_node_entry, drop_node_entry, next_node_id
from sessionquorum.cluster._view import ClusterView
from sessionquorum.proto import sessionquorum_pb2 as pb


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


def _listing(leader: str, term: int, ids: list[str], own_index: int, commit: int) -> pb.MemberListResponse:
    members = [
        pb.Member(node_id=n, is_self=n == leader, match_index=own_index if n == leader else 0) for n in ids
    ]
    return pb.MemberListResponse(members=members, answered_by=leader, term=term, commit_index=commit)


def _scripted(monkeypatch: pytest.MonkeyPatch, answers: list[object]) -> list[object]:
    """_member_list answers these in turn (an exception is raised); returns what is left."""
    left = list(answers)

    def member_list(view: object, timeout_s: float) -> object:
        answer = left.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(_grow, "_member_list", member_list)
    monkeypatch.setattr(_grow, "RETRY_PAUSE_S", 0.0)
    return left


def test_the_settled_members_wait_until_the_leader_committed_what_it_had_appended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    four = ["n1", "n2", "n3", "n4"]
    left = _scripted(
        monkeypatch,
        [
            _listing("n1", 3, four, own_index=10, commit=8),  # n4's add appended at 10, say
            _listing("n1", 3, four, own_index=12, commit=9),  # not committed yet
            _listing("n1", 3, four, own_index=13, commit=10),  # now it is
            _listing("n1", 3, four, own_index=14, commit=14),
        ],
    )
    settled = _grow.settled_members(cast(ClusterView, None), timeout_s=5.0)
    assert _grow.member_ids(settled) == four and settled.commit_index == 10
    assert len(left) == 1


def test_a_new_leader_or_a_changed_membership_or_no_answer_starts_the_settling_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    three, four = ["n1", "n2", "n3"], ["n1", "n2", "n3", "n4"]
    left = _scripted(
        monkeypatch,
        [
            _listing("n1", 3, four, own_index=10, commit=8),
            _listing("n2", 4, three, own_index=9, commit=9),  # the add was dropped by a new leader
            ClusterUnavailable("no leader"),
            _listing("n2", 4, three, own_index=11, commit=11),
            _listing("n2", 4, four, own_index=12, commit=11),  # n2 appends the add again
            _listing("n2", 4, four, own_index=13, commit=12),
        ],
    )
    assert _grow.member_ids(_grow.settled_members(cast(ClusterView, None), timeout_s=5.0)) == four
    assert left == []


def test_a_membership_that_never_settles_is_unavailable_not_a_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _scripted(monkeypatch, [ClusterUnavailable("no leader")] * 10_000)
    monkeypatch.setattr(_grow, "SETTLE_TIMEOUT_S", 0.05)
    with pytest.raises(ClusterUnavailable, match="unknown"):
        _grow.outcome(cast(ClusterView, None), ClusterUnavailable("DEADLINE_EXCEEDED"))

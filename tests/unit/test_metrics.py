"""store/metrics.py: per-node registries, request hooks, scrape-time state; SessionMachine's tallies."""

from __future__ import annotations

import asyncio
import hashlib
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sessionquorum.cluster import prepare_cluster_dir
from sessionquorum.store import commands as c
from sessionquorum.store import duties
from sessionquorum.store.config import Limits, load_node_config, parse_cluster_config
from sessionquorum.store.errors import ConfigError
from sessionquorum.store.metrics import MetricsServer, NodeMetrics, ScrapeView
from sessionquorum.store.raft import RaftStatus
from sessionquorum.store.state import SessionMachine
from tests.aio import run_async

RAFT = RaftStatus(
    is_leader=True,
    leader_raft_address="127.0.0.1:4001",
    term=7,
    commit_index=120,
    last_applied=119,
    has_quorum=True,
    journal_bytes=4096,
    journal_entries=33,
    snapshot_index=64,
    snapshot_bytes=2048,
    snapshots_taken=2,
    snapshots_installed=1,
    leader_changes=3,
    snapshot_seconds=0.25,
    packed_proposed=5,
)


def samples(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, parsed back from the exposition text as Prometheus would."""
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_observe_request_counts_and_times_per_method_and_code() -> None:
    m = NodeMetrics("n1")
    m.observe_request("Create", "OK", 0.002)
    m.observe_request("Create", "OK", 0.004)
    m.observe_request("Create", "FAILED_PRECONDITION", 0.0003)
    m.observe_request("Validate", "OK", 0.0007)
    got = samples(m)
    assert got[("sessionquorum_requests_total", (("code", "OK"), ("method", "Create")))] == 2
    assert got[("sessionquorum_requests_total", (("code", "FAILED_PRECONDITION"), ("method", "Create")))] == 1
    count = got[("sessionquorum_request_duration_seconds_count", (("code", "OK"), ("method", "Create")))]
    total = got[("sessionquorum_request_duration_seconds_sum", (("code", "OK"), ("method", "Create")))]
    assert count == 2 and total == pytest.approx(0.006)
    # The fast end is resolved: a 0.7 ms read lands below the 1 ms bucket.
    le_1ms = (("code", "OK"), ("le", "0.001"), ("method", "Validate"))
    assert got[("sessionquorum_request_duration_seconds_bucket", le_1ms)] == 1
    assert got[("sessionquorum_node_info", (("node", "n1"),))] == 1


def test_registries_are_per_node_and_never_the_global_one() -> None:
    a, b = NodeMetrics("n1"), NodeMetrics("n2")  # the same names twice: no duplicate error
    a.observe_request("Status", "OK", 0.001)
    assert ("sessionquorum_requests_total", (("code", "OK"), ("method", "Status"))) not in samples(b)
    assert (
        REGISTRY.get_sample_value("sessionquorum_requests_total", {"method": "Status", "code": "OK"}) is None
    )


def test_proposal_read_and_coalesced_hooks_feed_their_own_metrics() -> None:
    m = NodeMetrics("n1")
    m.observe_proposal(0.003)
    m.observe_read_index(0.0004)
    m.observe_read_index(0.0006)
    m.touch_coalesced()
    got = samples(m)
    assert got[("sessionquorum_raft_proposal_duration_seconds_count", ())] == 1
    assert got[("sessionquorum_read_index_duration_seconds_count", ())] == 2
    assert got[("sessionquorum_touches_coalesced_total", ())] == 1


def test_scrape_reads_the_node_view_once_per_scrape() -> None:
    calls = []

    def view() -> ScrapeView:
        calls.append(1)
        events = {
            "created": 5,
            "rotated": 2,
            "expired_idle": 4,
            "expired_absolute": 1,
            "exactly_once_hits": 6,
            "packed_entries": 8,
            "packed_commands": 40,
        }
        return ScrapeView(
            raft=RAFT,
            read_counts=(10, 9, 30, 12),
            sessions=42,
            exactly_once_clients=3,
            events=events,
            ready=True,
            serving=False,
        )

    m = NodeMetrics("n1", view)
    assert calls == []  # nothing read until Prometheus asks
    got = samples(m)
    assert len(calls) == 1
    expected = {
        "sessionquorum_raft_term": 7,
        "sessionquorum_raft_commit_index": 120,
        "sessionquorum_raft_applied_index": 119,
        "sessionquorum_raft_is_leader": 1,
        "sessionquorum_raft_leader_known": 1,
        "sessionquorum_raft_leader_changes_total": 3,
        "sessionquorum_journal_bytes": 4096,
        "sessionquorum_journal_entries": 33,
        "sessionquorum_snapshot_index": 64,
        "sessionquorum_snapshot_bytes": 2048,
        "sessionquorum_snapshot_last_duration_seconds": 0.25,
        "sessionquorum_snapshots_taken_total": 2,
        "sessionquorum_snapshots_installed_total": 1,
        "sessionquorum_read_index_rounds_sent_total": 10,
        "sessionquorum_read_index_lease_reads_total": 12,
        "sessionquorum_sessions_live": 42,
        "sessionquorum_exactly_once_clients": 3,
        "sessionquorum_sessions_created_total": 5,
        "sessionquorum_sessions_rotated_total": 2,
        "sessionquorum_exactly_once_hits_total": 6,
        "sessionquorum_packed_entries_applied_total": 8,
        "sessionquorum_packed_commands_applied_total": 40,
        "sessionquorum_packed_entries_proposed_total": 5,
        "sessionquorum_ready": 1,
        "sessionquorum_serving": 0,
    }
    assert {name: got[(name, ())] for name in expected} == expected
    assert got[("sessionquorum_sessions_ended_total", (("reason", "expired_idle"),))] == 4
    assert got[("sessionquorum_sessions_ended_total", (("reason", "deleted"),))] == 0
    samples(m)
    assert len(calls) == 2


def test_metrics_server_serves_the_registry_on_a_kernel_chosen_port() -> None:
    m = NodeMetrics("n1", lambda: ScrapeView(raft=replace(RAFT, term=9)))
    server = MetricsServer(m.registry, "127.0.0.1:0")
    try:
        assert server.port > 0 and server.address == f"127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.close()
    assert "sessionquorum_raft_term 9.0" in text


# ------------------------------------------------------------------ config
def _config(**node1: object) -> dict[str, object]:
    return {
        "nodes": [
            {"id": "n1", "raft": "127.0.0.1:4001", "grpc": "127.0.0.1:5001", **node1},
            {"id": "n2", "raft": "127.0.0.1:4002", "grpc": "127.0.0.1:5002", "metrics": "127.0.0.1:9102"},
        ],
        "raft_password_file": "pw",
        "insecure_no_tls": True,
    }


def test_metrics_address_is_per_node_and_optional() -> None:
    config = parse_cluster_config(_config(), Path("/tmp"))
    assert [n.metrics_address for n in config.nodes] == [None, "127.0.0.1:9102"]


@pytest.mark.parametrize(
    "bad", ["127.0.0.1:5001", "127.0.0.1:4002", "127.0.0.1:9102", "nohost", "h:99999", ""]
)
def test_metrics_address_on_a_taken_or_malformed_address_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_cluster_config(_config(metrics=bad), Path("/tmp"))


# ---------------------------------------------------- SessionMachine tallies
def h(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def run(m: SessionMachine, op: c.Op, now_ms: int, client: bytes | None = None, seq: int = 0) -> None:
    m.apply(c.encode(c.Command(op, now_ms=now_ms, client_id=client, sequence=seq)))


def create(
    name: str, principal: str | None = None, idle_ms: int = 60_000, life_ms: int = 600_000
) -> c.Create:
    return c.Create(h(name), f"h-{name}", principal, (), idle_ms, life_ms)


def test_machine_tallies_what_it_applied_and_a_snapshot_does_not_carry_them() -> None:
    m = SessionMachine(Limits(max_sessions_per_principal=2))
    run(m, create("a", "alice"), 1, client=b"c1", seq=1)
    run(m, create("a", "alice"), 2, client=b"c1", seq=1)  # a retry: the remembered answer
    run(m, create("b", "alice"), 3)
    run(m, create("c", "alice"), 4)  # at the cap: evicts "a"
    run(m, c.Rotate(h("b"), h("b2"), None), 5)
    run(m, c.Touch(h("b2")), 6)
    run(m, c.Delete(h("nothing"), None), 7)  # existed=False: not counted
    run(m, c.Delete(h("b2"), None), 8)
    run(m, create("d", "bob"), 9)
    run(m, create("e", "bob"), 10)
    run(m, c.RevokePrincipal("bob", None), 11)
    run(m, create("idle", idle_ms=1_000, life_ms=600_000), 12)
    run(m, create("life", idle_ms=1_000, life_ms=1_000), 13)
    run(m, c.Expire(100), 5_000)
    assert m.event_counts() == {
        "created": 7,
        "rotated": 1,
        "evicted": 1,
        "touched": 1,
        "deleted": 1,
        "revoked": 2,
        "expired_idle": 1,
        "expired_absolute": 1,
        "ended_disabled": 0,
        "ended_reuse": 0,
        "reuse_detected": 0,
        "tombstone_refused": 0,
        "exactly_once_hits": 1,
        "packed_entries": 0,
        "packed_commands": 0,
    }
    assert m.exactly_once_clients == 1
    # Not replicated state: a replica that never counted has the same snapshot, and a
    # restore (a snapshot installed from the leader) keeps this node's tallies.
    fresh = SessionMachine(Limits())
    fresh.restore(m.snapshot())
    assert fresh.snapshot() == m.snapshot()
    assert fresh.event_counts()["created"] == 0
    before = m.event_counts()
    m.restore(m.snapshot())
    assert m.event_counts() == before


def test_a_local_cluster_dir_gives_every_node_its_own_metrics_port(tmp_path: Path) -> None:
    nodes = prepare_cluster_dir(tmp_path / "cl", 3).config.nodes
    metrics = [n.metrics_address for n in nodes]
    assert all(a is not None and a.startswith("127.0.0.1:") for a in metrics)
    every = metrics + [n.grpc_address for n in nodes] + [n.raft_address for n in nodes]
    assert len(set(every)) == 9


# ------------------------------------------------------------ health: the leader watch
class _FakeLog:
    """Answers leader_heard_within from a script of answers, one per look."""

    def __init__(self, answers: list[bool], stop: asyncio.Event) -> None:
        self.answers, self.stop = answers, stop
        self.windows: list[float] = []

    def leader_heard_within(self, seconds: float) -> bool:
        self.windows.append(seconds)
        if len(self.answers) == 1:
            self.stop.set()
        return self.answers.pop(0)

    def term(self) -> int:
        return 3


def test_watch_leader_reports_only_flips_with_a_window_of_two_election_timeouts(tmp_path: Path) -> None:
    config = load_node_config(prepare_cluster_dir(tmp_path, 3).config_path, "n1")
    changes: list[bool] = []

    async def main() -> None:
        stop = asyncio.Event()
        fake = _FakeLog([False, True, True, False, False, True], stop)

        async def on_change(heard: bool) -> None:
            changes.append(heard)

        await duties.watch_leader(config, fake, stop, on_change)  # type: ignore[arg-type]
        assert set(fake.windows) == {2 * config.cluster.raft.election_max_s}

    run_async(main())
    assert changes == [True, False, True]

"""PreVote on real nodes: a node cut off for several election timeouts rejoins without an election.

Each node runs in its own network namespace (tests/integration/test_netns_partition.py); the
test process reaches every node over the bridge, so writers and Status calls are never cut.
Measured before PreVote (chaos `partition-isolate-leader`, seed 4343): the isolated old
leader returned with a higher term and writes stopped for 3.5 s starting at the heal.

The canary runs the same test with `raft.pre_vote` off and shows the hazard happens here:
the isolated node's term climbs while it is cut off, and the majority's term jumps when it
returns (its leader deposed).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sessionquorum.client import SessionClient, TLSConfig
from sessionquorum.cluster import LocalCluster
from tests.chaos.framework._netns import netns_cluster, netns_unavailable_reason

pytestmark = pytest.mark.cluster

LEADER_TIMEOUT_S = 15.0
CLIENT_TIMEOUT_S = 15.0
# How long the node stays cut off: several election timeouts (0.4-1.2 s), and past the
# 1.5 s after which pysyncobj drops a silent connection (it campaigns only while it
# believes itself connected, so a node's term climbs only in that first stretch).
CUT_S = 4.0
# After the heal: long enough for the node to reconnect (0.5 s retry) and for several of
# its election deadlines to pass, so a disruption would show.
OBSERVE_S = 4.0
POLL_S = 0.05
MAX_GAP_S = 2.0
WRITERS = 3


@pytest.fixture(autouse=True)
def _needs_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"needs root and iproute2/iptables: {reason}")


@dataclass
class Writers:
    """Threads that keep writing through the public client and record when each write was acked."""

    cluster: LocalCluster
    acks: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(WRITERS)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        tls = self.cluster.tls_files
        client = SessionClient(
            list(self.cluster.endpoints),
            tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key),
            timeout_s=CLIENT_TIMEOUT_S,
        )
        with client:
            while not self.stop.is_set():
                try:
                    client.create(attributes={"w": b"x"})
                except Exception as exc:  # an outcome-unknown write is simply not an ack
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                else:
                    self.acks.append(time.monotonic())

    def finish(self) -> float:
        self.stop.set()
        for t in self.threads:
            t.join(CLIENT_TIMEOUT_S * 2)
        assert not any(t.is_alive() for t in self.threads)
        return time.monotonic()

    def longest_gap_since(self, since: float, until: float) -> float:
        """The longest stretch from `since` to `until` in which no write was acknowledged."""
        marks = [since, *sorted(a for a in self.acks if since < a < until), until]
        return max(b - a for a, b in itertools.pairwise(marks))


def _terms(cluster: LocalCluster, nodes: list[str]) -> dict[str, int]:
    statuses = {n: cluster.status(n) for n in nodes}
    return {n: s.term for n, s in statuses.items() if s is not None}


def _pre_vote_rounds(cluster: LocalCluster, node: str) -> int:
    text = cluster.log_path(node).read_text(encoding="utf-8", errors="replace")
    return len(re.findall(r"pre-vote round \d+ for term", text))


@pytest.mark.parametrize(
    ("cut", "pre_vote"),
    [
        ("follower", True),
        # Without PreVote the hazard is certain here: the leader keeps the majority's term.
        pytest.param("follower", False, id="follower-canary-without-prevote"),
        # The chaos scenario's case; without PreVote the returning node disrupts only when
        # its term got ahead of the new leader's (timing), so no canary asserts it.
        pytest.param("leader", True, marks=pytest.mark.slow),
    ],
)
def test_cut_off_node_rejoins_after_heal_majority_term_unchanged_and_writes_flow(
    request: pytest.FixtureRequest, tmp_path: Path, cut: str, pre_vote: bool
) -> None:
    overrides = {"raft": {"pre_vote": pre_vote}}
    with netns_cluster(tmp_path / "cluster", 3, overrides=overrides) as (cluster, net):
        request.node._sq_clusters = [cluster]  # log tails on failure (conftest)
        cluster.start()
        leader = cluster.wait_for_leader(LEADER_TIMEOUT_S)
        isolated = leader if cut == "leader" else next(n for n in cluster.node_ids if n != leader)
        majority = [n for n in cluster.node_ids if n != isolated]
        writers = Writers(cluster)
        writers.start()
        cluster.wait_until(lambda: len(writers.acks) >= 10, LEADER_TIMEOUT_S, "first writes")

        net.isolate(isolated)
        cut_at = time.monotonic()
        if cut == "leader":
            cluster.wait_for_new_leader(isolated, LEADER_TIMEOUT_S)
        majority_before = _terms(cluster, majority)
        writers.stop.wait(max(0.0, cut_at + CUT_S - time.monotonic()))  # the fault's duration
        acked_before_heal = len(writers.acks)
        majority_at_heal = _terms(cluster, majority)
        isolated_at_heal = _terms(cluster, [isolated])[isolated]
        assert majority_at_heal == majority_before  # nothing moved the majority while cut

        net.heal()
        healed_at = time.monotonic()
        highest = dict(majority_at_heal)
        while time.monotonic() - healed_at < OBSERVE_S:  # a bounded observation, polled
            for node, term in _terms(cluster, majority).items():
                highest[node] = max(highest[node], term)
            writers.stop.wait(POLL_S)
        ended = writers.finish()
        gap = writers.longest_gap_since(healed_at, ended)
        whole_run_gap = writers.longest_gap_since(min(writers.acks), ended)  # failover included
        # The rejoined node follows the majority's leader and catches up.
        cluster.wait_until(cluster.converged, LEADER_TIMEOUT_S, "every node to converge")
        rounds = _pre_vote_rounds(cluster, isolated)

    elections_at_heal = max(highest[n] - majority_at_heal[n] for n in majority)
    print(
        f"cut {cut}, pre_vote {pre_vote}: isolated node's term at heal {isolated_at_heal} vs majority "
        f"{max(majority_at_heal.values())}, elections at heal {elections_at_heal}, "
        f"pre-vote rounds on it {rounds}, longest write gap after heal {gap:.2f} s "
        f"(whole run {whole_run_gap:.2f} s)"
    )
    assert len(writers.acks) > acked_before_heal  # writes went on after the heal
    if pre_vote:
        # Its election deadline did pass (PreVote asked instead of campaigning), yet no election.
        assert rounds >= 1
        assert isolated_at_heal <= max(majority_at_heal.values())
        assert elections_at_heal == 0
        assert gap < MAX_GAP_S
    else:
        # The hazard happened in this run: the returning node's higher term forced an election.
        assert rounds == 0
        assert elections_at_heal >= 1

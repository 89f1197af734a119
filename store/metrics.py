"""A node's Prometheus metrics: one registry per node, served on its own plain-HTTP port.

Two kinds of metric, by what they cost on the request path:
- Events the request path observes itself (a request, a proposal, a read confirmation, a
  coalesced touch): a counter increment and a histogram observe, on label children looked
  up once (`_children`). Nothing else runs per request.
- State the node already keeps (Raft indexes, the journal, snapshots, sessions live, the
  apply-side tallies of `SessionMachine.events`): read only when Prometheus scrapes, by
  `_NodeCollector`, through one `ScrapeView` the node builds (one short hold of the state
  lock). A scrape never slows the request path for longer than that read.

The registry is this node's own, never prometheus_client's global one: tests run several
nodes' metrics in one process, and the library's process/platform collectors are left out
(a node's process metrics belong to the host's exporter).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from threading import Thread
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .config import split_address
from .raft import RaftStatus

log = logging.getLogger(__name__)

PREFIX = "sessionquorum"

# Request and Raft latencies on one machine span ~0.3 ms (a lease read) to seconds (an
# apply timeout): Prometheus' default buckets start at 5 ms and would hide the fast half.
LATENCY_BUCKETS_S = (
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass(frozen=True, slots=True)
class ScrapeView:
    """What one scrape reads from the node (node.py builds it)."""

    raft: RaftStatus
    # (rounds sent, rounds confirmed, reads confirmed, of them by lease): ReplicatedLog.read_counts
    read_counts: tuple[int, int, int, int] = (0, 0, 0, 0)
    sessions: int = 0
    exactly_once_clients: int = 0
    # SessionMachine.events: what this node applied since it started.
    events: Mapping[str, int] = field(default_factory=dict)
    ready: bool = False
    serving: bool = False


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)


# SessionMachine.events key -> (metric, label value or None, help).
_EVENT_METRICS: dict[str, tuple[str, str | None, str]] = {
    "created": ("sessions_created", None, "Sessions created (applied on this node)."),
    "rotated": ("sessions_rotated", None, "Session tokens rotated (applied on this node)."),
    "deleted": ("sessions_ended", "deleted", ""),
    "revoked": ("sessions_ended", "revoked", ""),
    "evicted": ("sessions_ended", "evicted", ""),
    "expired_idle": ("sessions_ended", "expired_idle", ""),
    "expired_absolute": ("sessions_ended", "expired_absolute", ""),
    "ended_disabled": ("sessions_ended", "disabled", ""),
    "ended_reuse": ("sessions_ended", "reuse", ""),
    "reuse_detected": (
        "token_reuse_detected",
        None,
        "Rotated-away tokens used after their grace (a theft signal; applied on this node).",
    ),
    "tombstone_refused": (
        "token_hash_reuse_refused",
        None,
        "Creates and rotations refused because an ended session's token hash was still reserved.",
    ),
    "touched": ("touches_applied", None, "Touch commands applied on this node (validate touches included)."),
    "exactly_once_hits": (
        "exactly_once_hits",
        None,
        "Retried commands answered from the exactly-once table instead of applied again.",
    ),
    "packed_entries": (
        "packed_entries_applied",
        None,
        "Packed log entries (several commands in one entry, store/_packing.py) applied on this node.",
    ),
    "packed_commands": (
        "packed_commands_applied",
        None,
        "Commands that arrived inside packed entries and were applied on this node.",
    ),
}
_ENDED_HELP = (
    "Sessions ended, by reason: deleted (Delete), revoked (RevokePrincipal), evicted (principal cap), "
    "expired_idle, expired_absolute (the expiry sweep), disabled (principal disabled), "
    "reuse (a rotated-away token used after its grace, with revoke_on_reuse). Applied on this node."
)


class _NodeCollector(Collector):
    """State read at scrape time (see the module docstring)."""

    def __init__(self, view: Callable[[], ScrapeView]) -> None:
        self._view = view

    def collect(self) -> Iterable[Metric]:
        v = self._view()
        r = v.raft
        yield _gauge("raft_term", "This node's current Raft term.", r.term)
        yield _gauge("raft_commit_index", "This node's Raft commit index.", r.commit_index)
        yield _gauge("raft_applied_index", "The last log index applied to this node's state.", r.last_applied)
        yield _gauge("raft_is_leader", "1 while this node is the Raft leader.", int(r.is_leader))
        yield _gauge(
            "raft_leader_known", "1 while this node knows a leader.", int(r.leader_raft_address is not None)
        )
        yield _counter(
            "raft_leader_changes",
            "New (term, leader) pairs this node saw since it started.",
            r.leader_changes,
        )
        yield _gauge("journal_bytes", "Size of the Raft journal file.", r.journal_bytes)
        yield _gauge("journal_entries", "Entries in the Raft journal.", r.journal_entries)
        yield _gauge("snapshot_index", "Log index of the latest snapshot.", r.snapshot_index)
        yield _gauge("snapshot_bytes", "Size of the latest snapshot file.", r.snapshot_bytes)
        yield _gauge(
            "snapshot_last_duration_seconds",
            "How long the latest snapshot this node took ran (state capture plus writing).",
            r.snapshot_seconds,
        )
        yield _counter("snapshots_taken", "Snapshots this node wrote since it started.", r.snapshots_taken)
        yield _counter(
            "packed_entries_proposed", "Packed log entries this node proposed as leader.", r.packed_proposed
        )
        yield _counter(
            "snapshots_installed", "Snapshots installed from the leader since start.", r.snapshots_installed
        )
        sent, confirmed, reads, by_lease = v.read_counts
        yield _counter("read_index_rounds_sent", "ReadIndex confirmation rounds sent (leader).", sent)
        yield _counter("read_index_rounds_confirmed", "ReadIndex rounds a majority confirmed.", confirmed)
        # Per read batch (the readers that arrived together share one index), not per read:
        # read_index_duration_seconds counts every read.
        yield _counter("read_index_reads", "Read batches given a confirmed read index.", reads)
        yield _counter("read_index_lease_reads", "Of those, confirmed by the leader's lease.", by_lease)
        yield _gauge("sessions_live", "Sessions in this node's state (expired ones until swept).", v.sessions)
        yield _gauge(
            "exactly_once_clients", "Client ids remembered in the exactly-once table.", v.exactly_once_clients
        )
        yield _gauge("ready", "1 once this node applied what was committed when it started.", int(v.ready))
        yield _gauge(
            "serving", "1 while gRPC health says SERVING (ready, and a leader is heard).", int(v.serving)
        )
        ended = CounterMetricFamily(f"{PREFIX}_sessions_ended", _ENDED_HELP, labels=["reason"])
        for key, (name, label, doc) in _EVENT_METRICS.items():
            count = v.events.get(key, 0)
            if label is None:
                yield _counter(name, doc, count)
            else:
                ended.add_metric([label], count)
        yield ended


class NodeMetrics:
    """One node's registry and the hooks its request path calls."""

    def __init__(self, node_id: str, view: Callable[[], ScrapeView] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        info = Gauge(
            f"{PREFIX}_node_info",
            "Constant 1, labelled with this node's id.",
            ["node"],
            registry=self.registry,
        )
        info.labels(node_id).set(1)
        self._requests = Counter(
            f"{PREFIX}_requests",
            "gRPC requests by method and status code; each Batch item also counts as its own method.",
            ["method", "code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from a request's decoding to its answer, by method and status code.",
            ["method", "code"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._proposal = Histogram(
            f"{PREFIX}_raft_proposal_duration_seconds",
            "Time from proposing a command to its apply on this node (successful proposals).",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._read = Histogram(
            f"{PREFIX}_read_index_duration_seconds",
            "Time a linearizable read waited for its confirmed read index.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._coalesced = Counter(
            f"{PREFIX}_touches_coalesced",
            "Touching validates that wrote nothing: last access was within server.touch_interval_ms.",
            registry=self.registry,
        )
        self._refused = Counter(
            f"{PREFIX}_permission_denied",
            "Requests refused PERMISSION_DENIED, by method and why: role (the certificate's roles do "
            "not cover the method, store/authz.py) or scope (session_token_hash names no live session "
            "of the principal).",
            ["method", "why"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        if view is not None:
            self.registry.register(_NodeCollector(view))

    def observe_request(self, method: str, code: str, seconds: float) -> None:
        children = self._children.get((method, code))
        if children is None:
            children = self._requests.labels(method, code), self._latency.labels(method, code)
            self._children[(method, code)] = children
        children[0].inc()
        children[1].observe(seconds)

    def permission_denied(self, method: str, why: str) -> None:
        """A refused call (why: "role" or "scope"); the caller counts it as a request too."""
        self._refused.labels(method, why).inc()

    def observe_proposal(self, seconds: float) -> None:
        self._proposal.observe(seconds)

    def observe_read_index(self, seconds: float) -> None:
        self._read.observe(seconds)

    def touch_coalesced(self) -> None:
        self._coalesced.inc()


class MetricsServer:
    """The `/metrics` HTTP endpoint on its own thread (prometheus_client's WSGI server)."""

    def __init__(self, registry: CollectorRegistry, address: str) -> None:
        host, port = split_address(address)
        self._server, self._thread = _start(registry, host, port)
        self.port = int(self._server.server_port)
        self.address = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _start(registry: CollectorRegistry, host: str, port: int) -> tuple[Any, Thread]:
    server, thread = start_http_server(port, addr=host, registry=registry)
    return server, thread

"""One chaos run: a real cluster, workers writing through the client, a nemesis, the checks.

    run_scenario(Scenario(...), seed, out_dir) -> report dict (also out_dir/<name>.json/.png)

The run is bounded twice over: the fault loop ends at `duration_s`, and every worker stops
at the same deadline (each client call has its own deadline too). Afterwards everything is
healed, a final write must succeed, every node must reach the same state digest, and each
workload verifies what it recorded. Everything random comes from `seed`, so a run can be
replayed (the interleaving with the OS scheduler, of course, cannot).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sessionquorum.client import SessionClient, TLSConfig
from sessionquorum.cluster import ClusterError, ClusterTimeout, LocalCluster

from ._history import FaultWindow, History
from ._nemesis import PARTITIONS, ClockSkew, ClockWrapper, Nemesis, Partitioner, process_nemesis
from ._netns import netns_cluster, netns_unavailable_reason
from ._report import plot_timeline, summarise, write_report
from ._workloads import CounterWorkload, LifecycleWorkload, RegisterWorkload, Workload

log = logging.getLogger(__name__)

CLIENT_TIMEOUT_S = 5.0
HEAL_TIMEOUT_S = 60.0
WORKLOADS: dict[str, Callable[[], Workload]] = {
    "register": RegisterWorkload,
    "counter": CounterWorkload,
    "lifecycle": LifecycleWorkload,
}


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    nemesis: str
    nodes: int = 3
    workloads: tuple[str, ...] = ("register", "counter", "lifecycle")
    workers: int = 6
    duration_s: float = 20.0
    quiet_s: float = 2.0  # between a heal and the next fault
    fault_s: float = 3.0  # how long a fault lasts
    preload: int = 0  # sessions created before the run (a big state makes catch-up real)


@dataclass
class _Run:
    scenario: Scenario
    cluster: LocalCluster
    history: History = field(default_factory=History)
    faults: list[FaultWindow] = field(default_factory=list)
    events: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    worker_errors: list[str] = field(default_factory=list)
    catch_up_s: list[float] = field(default_factory=list)
    watchers: list[threading.Thread] = field(default_factory=list)


# Where the workers' linearizable reads go ("leader" or "any": follower reads); `--read-from`.
READ_FROM = {"value": "leader"}


def _client(cluster: LocalCluster, timeout_s: float = CLIENT_TIMEOUT_S) -> SessionClient:
    tls = cluster.tls_files
    return SessionClient(
        list(cluster.endpoints),
        tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key),
        timeout_s=timeout_s,
        read_from=READ_FROM["value"],
    )


def _worker(run: _Run, workload: Workload, process: int, seed: int, deadline: float) -> None:
    rng = random.Random(seed * 1000 + process)
    with _client(run.cluster) as client:
        while not run.stop.is_set() and time.monotonic() < deadline:
            try:
                workload.step(client, process, rng, run.history)
            except Exception as exc:  # a bug in a workload must not pass silently
                log.exception("worker %d crashed", process)
                run.worker_errors.append(f"worker {process}: {type(exc).__name__}: {exc}")
                return


def _nemesis_loop(run: _Run, nemesis: Nemesis, rng: random.Random, deadline: float) -> None:
    s = run.scenario
    while time.monotonic() + s.quiet_s + s.fault_s < deadline and not run.stop.wait(s.quiet_s):
        start = run.history.now()
        detail = nemesis.inject(run.cluster, rng)
        if nemesis.recovery_from == "inject":
            run.events.append(run.history.now())  # once the fault is in effect
        run.stop.wait(s.fault_s)
        nemesis.heal(run.cluster)
        end = run.history.now()
        if nemesis.recovery_from == "heal":
            run.events.append(end)
        run.faults.append(FaultWindow(nemesis.name, start, end, detail))
        watcher = threading.Thread(target=_watch_catch_up, args=(run, time.monotonic()), daemon=True)
        watcher.start()
        run.watchers.append(watcher)


def _statuses(cluster: LocalCluster) -> list[Any]:
    """Every member's Status; [] when the membership changed meanwhile (the membership nemesis)."""
    try:
        return [cluster.status(n) for n in cluster.node_ids]
    except ClusterError:
        return []


def _watch_catch_up(run: _Run, healed_at: float) -> None:
    """Time until every node has applied what was committed when the fault was healed."""
    cluster = run.cluster
    statuses = _statuses(cluster)
    target = max((s.commit_index for s in statuses if s is not None), default=0)
    while time.monotonic() - healed_at < HEAL_TIMEOUT_S:
        current = _statuses(cluster)
        if current and all(s is not None and s.last_applied >= target for s in current):
            run.catch_up_s.append(round(time.monotonic() - healed_at, 3))
            return
        time.sleep(0.1)


PRELOAD_THREADS = 32


def _preload(cluster: LocalCluster, count: int) -> None:
    """Create `count` sessions through the client, as fast as 32 threads manage."""
    value = b"p" * 100
    with _client(cluster, timeout_s=60.0) as client, ThreadPoolExecutor(PRELOAD_THREADS) as pool:
        for _ in pool.map(lambda i: client.create(attributes={"preload": value}), range(count)):
            pass


def _term(cluster: LocalCluster) -> int:
    return max((s.term for s in (cluster.status(n) for n in cluster.node_ids) if s is not None), default=0)


def _settle(run: _Run, anomalies: list[str]) -> dict[str, Any]:
    """After healing: a leader, a final write, and identical state on every node."""
    cluster = run.cluster
    facts: dict[str, Any] = {}
    started = time.monotonic()
    try:
        cluster.wait_for_leader(HEAL_TIMEOUT_S)
        with _client(cluster, timeout_s=HEAL_TIMEOUT_S) as client:
            client.create(attributes={"final": b"write"})
        facts["final_write_s"] = round(time.monotonic() - started, 3)
        facts["digest"] = cluster.wait_until(cluster.converged, HEAL_TIMEOUT_S, "every node to converge")
        facts["term_end"] = _term(cluster)
    except ClusterTimeout as exc:
        views = {
            n: (s.term, s.is_leader, s.commit_index, s.last_applied, s.state_digest[:12]) if s else None
            for n, s in ((n, cluster.status(n, digest=True)) for n in cluster.node_ids)
        }
        anomalies.append(
            f"cluster did not settle after healing: {str(exc).splitlines()[0]}; "
            f"(term, leader, commit, applied, digest) per node: {views}"
        )
        anomalies += _silent_nodes(cluster, [n for n, v in views.items() if v is None])
    except Exception as exc:
        anomalies.append(f"final write failed after healing: {type(exc).__name__}: {exc}")
    return facts


def _silent_nodes(cluster: LocalCluster, silent: list[str]) -> list[str]:
    """Why a node did not answer: whether its process runs (or how it ended), its log's end."""
    exited = cluster.reap()
    lines = []
    for node in silent:
        pid = cluster.pid(node)
        state = f"running (pid {pid})" if pid is not None else f"not running (exit code {exited.get(node)})"
        tail = cluster.log_tail(node, 8).replace("\n", "\n    ")
        lines.append(f"{node} did not answer: {state}; its log ends:\n    {tail}")
    return lines


def unavailable_reason(scenario: Scenario) -> str | None:
    """Why this scenario cannot run on this machine (partitions need root and iptables)."""
    if scenario.nemesis in PARTITIONS:
        return netns_unavailable_reason()
    if scenario.nemesis == "clock-skew" and not Path("/usr/lib/x86_64-linux-gnu/faketime").is_dir():
        return "clock skew needs libfaketime (Debian package faketime)"
    return None


@contextmanager
def _cluster_for(scenario: Scenario, data_dir: Path) -> Iterator[tuple[LocalCluster, Nemesis]]:
    if scenario.nemesis in PARTITIONS:
        kind = scenario.nemesis.removeprefix("partition-")
        with netns_cluster(data_dir, scenario.nodes) as (cluster, net):
            yield cluster, Partitioner(kind, net)  # type: ignore[arg-type]
    elif scenario.nemesis == "clock-skew":
        wrapper = ClockWrapper()
        with LocalCluster(data_dir, scenario.nodes, node_wrapper=wrapper) as cluster:
            yield cluster, ClockSkew(wrapper)
    else:
        with LocalCluster(data_dir, scenario.nodes) as cluster:
            yield cluster, process_nemesis(scenario.nemesis)


def run_scenario(scenario: Scenario, seed: int, out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    workloads = [WORKLOADS[name]() for name in scenario.workloads]
    anomalies: list[str] = []
    with _cluster_for(scenario, out_dir / f"{scenario.name}-cluster") as (cluster, nemesis):
        run = _Run(scenario, cluster)
        cluster.start()
        cluster.wait_for_leader(HEAL_TIMEOUT_S)
        if scenario.preload:
            _preload(cluster, scenario.preload)
        with _client(cluster, timeout_s=30.0) as admin:
            for w in workloads:
                w.setup(admin)
        term_start = _term(cluster)
        run.history = History()  # time zero: when the workers start
        deadline = time.monotonic() + scenario.duration_s
        threads = [
            threading.Thread(
                target=_worker,
                args=(run, workloads[p % len(workloads)], p, seed, deadline),
                name=f"worker-{p}",
            )
            for p in range(scenario.workers)
        ]
        for t in threads:
            t.start()
        try:
            _nemesis_loop(run, nemesis, rng, deadline)
            run.stop.wait(max(0.0, deadline - time.monotonic()))  # a quiet tail after the last heal
        finally:
            run.stop.set()
            for t in threads:
                t.join(CLIENT_TIMEOUT_S * 4)
            nemesis.heal(cluster)
        for watcher in run.watchers:
            watcher.join(HEAL_TIMEOUT_S)
        facts = _settle(run, anomalies)
        facts["catch_up_s"] = summarise(run.catch_up_s)
        facts["term_start"] = term_start
        checks: dict[str, Any] = {}
        with _client(cluster, timeout_s=30.0) as verifier:
            for w in workloads:
                result = w.verify(verifier, run.history)
                checks[w.name] = result
                anomalies += result["anomalies"]
        anomalies += run.worker_errors
    report = write_report(
        out_dir / f"{scenario.name}.json",
        scenario=scenario.name,
        seed=seed,
        history=run.history,
        faults=run.faults,
        checks=checks,
        extra={"scenario": asdict(scenario), "anomalies": anomalies, "settle": facts},
        recovery_events=run.events,
    )
    try:
        plot_timeline(
            out_dir / f"{scenario.name}.png", run.history, run.faults, f"{scenario.name} (seed {seed})"
        )
    except RuntimeError as exc:  # matplotlib missing: the JSON report still stands
        log.warning("no timeline: %s", exc)
    return report

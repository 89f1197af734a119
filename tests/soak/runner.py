"""One soak run: start a cluster, load it, break it on schedule, watch it, judge it.

    python -m tests.soak [--minutes M] [--out DIR] [--short]   (`make soak`; SOAK_MINUTES)

Writes DIR/soak.json (plan, verdicts, facts, samples, throughput; the ops themselves go to
DIR/soak-history.jsonl.gz so the report stays readable), DIR/soak.png, and prints a short
summary; the exit status is 1 when a verdict fails. The cluster directory (node logs) is
kept under DIR only when something failed.

Bounded everywhere: workers and faults stop at the deadline, every client call has its own
deadline, every wait for the cluster has a timeout, and the sampler stops by itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import random
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sessionquorum.client import SessionClient, SessionQuorumError, TLSConfig
from sessionquorum.cluster import ClusterTimeout, ClusterView, LocalCluster
from tests.chaos.framework import History
from tests.chaos.framework._nemesis import ClockWrapper

from . import verdicts as v
from .faults import Faults
from .load import SoakLoad
from .observe import Sampler
from .plan import SoakPlan
from .plot import plot
from .report import judge, summary, write

log = logging.getLogger(__name__)

CLIENT_TIMEOUT_S = 5.0
ADMIN_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 60.0
FAULTS_JOIN_S = 300.0
SAMPLER_SLACK_S = 900.0  # the sampler also watches the heal and the final checks


def _client(cluster: LocalCluster, timeout_s: float) -> SessionClient:
    tls = cluster.tls_files
    return SessionClient(
        list(cluster.endpoints), tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key), timeout_s=timeout_s
    )


def _worker(
    cluster: LocalCluster, load: SoakLoad, plan: SoakPlan, process: int, seed: int,
    stop: threading.Event, deadline: float, errors: list[str],
) -> None:  # fmt: skip
    rng = random.Random(seed * 1000 + process)
    interval = 1.0 / plan.ops_per_worker_s
    next_at = time.monotonic()
    with _client(cluster, CLIENT_TIMEOUT_S) as client:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                load.step(client, process, rng)
            except Exception as exc:  # a bug in the load must not pass silently
                log.exception("worker %d crashed", process)
                errors.append(f"worker {process}: {type(exc).__name__}: {exc}")
                return
            # Paced, never bursting to catch up after a stall: the soak is sustained, not a benchmark.
            next_at = max(next_at + interval, time.monotonic())
            stop.wait(next_at - time.monotonic())


def _settle(cluster: LocalCluster, wrapper: ClockWrapper, anomalies: list[str]) -> None:
    """Every node up on a true clock, a final write, and one state digest everywhere."""
    wrapper.skews.clear()
    try:
        for node_id in cluster.node_ids:
            if cluster.pid(node_id) is None:
                cluster.start_node(node_id)
        cluster.wait_for_leader(SETTLE_TIMEOUT_S)
        with _client(cluster, SETTLE_TIMEOUT_S) as client:
            client.create(attributes={"final": b"write"})
        cluster.wait_until(cluster.converged, SETTLE_TIMEOUT_S, "every node to converge")
    except (ClusterTimeout, SessionQuorumError) as exc:
        anomalies.append(f"the cluster did not settle after the run: {str(exc).splitlines()[0]}")


def run_soak(
    plan: SoakPlan,
    out_dir: Path,
    seed: int | None = None,
    extra_overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`extra_overrides` adds cluster settings to the plan's (canaries: a store made unsafe on purpose)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    overrides = plan.overrides()
    for section, values in (extra_overrides or {}).items():
        overrides[section] = {**overrides.get(section, {}), **values}
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    cluster_dir = out_dir / f"cluster-{stamp}"
    wrapper = ClockWrapper()
    anomalies: list[str] = []
    worker_errors: list[str] = []
    stop = threading.Event()
    started = time.monotonic()
    with LocalCluster(cluster_dir, 3, overrides=overrides, node_wrapper=wrapper) as cluster:
        cluster.start()
        cluster.wait_for_leader(ADMIN_TIMEOUT_S)
        history = History()  # time zero: the load starts now
        load = SoakLoad(plan, history)
        with _client(cluster, ADMIN_TIMEOUT_S) as admin:
            load.new_generation(admin)
            sampler = Sampler(
                ClusterView(cluster_dir), cluster.pid, history.now, plan.sample_period_s,
                plan.duration_s + SAMPLER_SLACK_S,
            )  # fmt: skip
            sampler.start()
            faults = Faults(plan, cluster, wrapper, sampler, history.now, stop)
            deadline = time.monotonic() + plan.duration_s
            threads = [
                threading.Thread(
                    target=_worker,
                    args=(cluster, load, plan, p, seed, stop, deadline, worker_errors),
                    name=f"soak-worker-{p}",
                )
                for p in range(plan.workers)
            ]
            threads.append(threading.Thread(target=faults.run, name="soak-faults"))
            for t in threads:
                t.start()
            try:
                while not stop.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
                    if time.monotonic() >= deadline:
                        break
                    try:
                        load.maintain(admin)
                    except SessionQuorumError as exc:  # during a fault: try again in a second
                        log.info("key maintenance postponed: %s", exc)
            finally:
                stop.set()
                for t in threads:
                    t.join(FAULTS_JOIN_S if t.name == "soak-faults" else CLIENT_TIMEOUT_S * 4)
            load_end_s = history.now()
            _settle(cluster, wrapper, anomalies)
            sampler.stop()
            checks = load.verify(admin)
    anomalies += checks.pop("anomalies") + worker_errors
    report = judge(plan, sampler.samples(), history, faults, anomalies, checks, load_end_s)
    report.update(
        seed=seed,
        overrides=overrides,
        wall_s=round(time.monotonic() - started, 1),
        cluster_dir=str(cluster_dir),
    )
    write(out_dir, report, history)
    try:
        compactions = {n: v.compaction_intervals(sampler.samples(), n) for n in report["nodes"]}
        plot(out_dir / "soak.png", sampler.samples(), report["throughput"], faults.windows, compactions,
             plan.windows(),
             f"soak: {plan.duration_s / 60:.1f} min, seed {seed}")  # fmt: skip
    except RuntimeError as exc:
        log.warning("no plot: %s", exc)
    if report["ok"]:
        shutil.rmtree(cluster_dir, ignore_errors=True)
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak")
    parser.add_argument("--minutes", type=float, default=None, help="default: SOAK_MINUTES or 30")
    parser.add_argument("--short", action="store_true", help="the ~90 s version `make test` runs")
    parser.add_argument("--out", type=Path, default=Path("soak-results"))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-compaction", action="store_true", help="leave compaction at its defaults")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    plan = SoakPlan.short() if args.short else SoakPlan.from_env()
    if args.minutes is not None:
        plan = SoakPlan.full(args.minutes, compaction=plan.compaction)
    if args.no_compaction:
        plan = dataclasses.replace(plan, compaction=False)
    print(f"soak: {plan.duration_s / 60:.1f} min, overrides {plan.overrides()}, out {args.out}", flush=True)
    report = run_soak(plan, args.out, args.seed)
    print(summary(report))
    print(f"report: {args.out / 'soak.json'}, plot: {args.out / 'soak.png'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

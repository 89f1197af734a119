"""A bounded write workload run by client threads, and the checks of what it recorded.

Each thread loops: create a session, then update it a few times, each update setting
attribute "n" to the next number. It records, per session, what was acknowledged and what
had an unknown outcome. Afterwards every node must hold every acknowledged create, each
session's "n" must be at least its last acknowledged value (nothing acknowledged lost),
and its version minus one must lie between the acknowledged updates and acknowledged plus
unknown ones (no update applied twice).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from sessionquorum.client import OutcomeUnknown, SessionClient, SessionQuorumError
from sessionquorum.cluster import LocalCluster

from .helpers import local_read

UPDATES_PER_SESSION = 3
MAX_RUN_S = 120.0  # hard bound: a thread stops by itself even if nobody stops it


@dataclass
class Record:
    token: str
    handle: str
    acked_updates: int = 0
    unknown_updates: int = 0
    last_acked_n: int = 0


@dataclass
class Ledger:
    records: list[Record] = field(default_factory=list)
    unknown_creates: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def acked(self) -> int:
        with self.lock:
            return len(self.records) + sum(r.acked_updates for r in self.records)


class Workload:
    def __init__(self, client: SessionClient, threads: int = 4) -> None:
        self.client = client
        self.ledger = Ledger()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"writer-{i}") for i in range(threads)]

    def __enter__(self) -> Workload:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=MAX_RUN_S)

    def _run(self) -> None:
        end = time.monotonic() + MAX_RUN_S
        ledger = self.ledger
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                created = self.client.create(attributes={"n": b"0"})
            except OutcomeUnknown:
                with ledger.lock:
                    ledger.unknown_creates += 1
                continue
            except SessionQuorumError as exc:
                with ledger.lock:
                    ledger.errors[type(exc).__name__] += 1
                continue
            record = Record(created.token, created.session.handle)
            with ledger.lock:
                ledger.records.append(record)
            for n in range(1, UPDATES_PER_SESSION + 1):
                if self._stop.is_set():
                    break
                try:
                    self.client.update(record.token, set={"n": str(n).encode()})
                except OutcomeUnknown:
                    with ledger.lock:
                        record.unknown_updates += 1
                    continue
                except SessionQuorumError as exc:
                    with ledger.lock:
                        ledger.errors[type(exc).__name__] += 1
                    continue
                with ledger.lock:
                    record.acked_updates += 1
                    record.last_acked_n = n


def verify_on_every_node(cluster: LocalCluster, ledger: Ledger) -> None:
    """Nothing acknowledged is lost and nothing is applied twice, on every node."""
    problems: list[str] = []
    for node in cluster.node_ids:
        for r in ledger.records:
            s = local_read(cluster, node, r.token)
            if s is None:
                problems.append(f"{node}: acknowledged create {r.handle} is missing")
                continue
            n = int(s.attributes["n"])
            if n < r.last_acked_n:
                problems.append(f"{node}: {r.handle} has n={n}, acknowledged n={r.last_acked_n}")
            applied = s.version - 1
            if not r.acked_updates <= applied <= r.acked_updates + r.unknown_updates:
                problems.append(
                    f"{node}: {r.handle} applied {applied} updates; acknowledged {r.acked_updates}, "
                    f"unknown {r.unknown_updates}"
                )
    assert not problems, "\n".join(problems[:20])

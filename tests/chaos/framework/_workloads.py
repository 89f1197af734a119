"""Workloads that run during faults, through the real client library, and check themselves.

Each workload owns a few sessions, issues one op per `step` (a worker has one op in
flight), records it in the History with an honest outcome, and after the cluster is
healed `verify`s what it saw:

- `RegisterWorkload`: per-key registers (a session's attribute "v"): linearizable reads
  (validate) and compare-and-set writes (update with expected version); checked for
  linearizability per key.
- `CounterWorkload`: a counter per session (server-side increment); a retried increment
  applied twice, or an acknowledged one lost, shows in the final value.
- `LifecycleWorkload`: create / rotate / delete / validate; no acknowledged create is
  missing, no definitely failed create exists, and no deleted or rotated-away token is ever
  served again.
"""

from __future__ import annotations

import random
import threading
from abc import ABC, abstractmethod
from typing import Any

from sessionquorum.client import (
    NotFound,
    OutcomeUnknown,
    SessionClient,
    SessionQuorumError,
    Unavailable,
    VersionConflict,
)

from ._history import History, Invocation
from ._linearizability import check_all
from ._models import CounterModel, RegisterModel


def _finish_error(call: Invocation, exc: SessionQuorumError, mutation: bool) -> None:
    """Unknown only for a mutation that may have been applied; a failed read had no effect."""
    if mutation and isinstance(exc, OutcomeUnknown):
        call.unknown(exc)
    else:
        call.fail(exc)


class Workload(ABC):
    name: str

    @abstractmethod
    def setup(self, client: SessionClient) -> None: ...

    @abstractmethod
    def step(self, client: SessionClient, process: int, rng: random.Random, history: History) -> None: ...

    @abstractmethod
    def verify(self, client: SessionClient, history: History) -> dict[str, Any]:
        """Return {"anomalies": [str, ...], ...details}; called once the cluster is healed."""


class RegisterWorkload(Workload):
    name = "register"

    def __init__(self, keys: int = 4, budget_s: float = 60.0) -> None:
        self._keys = [f"r{i}" for i in range(keys)]
        self._tokens: dict[str, str] = {}
        self._seen: dict[tuple[int, str], int] = {}
        self._budget_s = budget_s

    def setup(self, client: SessionClient) -> None:
        for key in self._keys:
            self._tokens[key] = client.create(attributes={"v": b"0"}).token

    def step(self, client: SessionClient, process: int, rng: random.Random, history: History) -> None:
        key = rng.choice(self._keys)
        token = self._tokens[key]
        expected = self._seen.get((process, key))
        if expected is None or rng.random() < 0.4:
            call = history.invoke(process, key, "read")
            try:
                s = client.validate(token)
            except NotFound:
                call.ok({"missing": True})
            except SessionQuorumError as exc:
                _finish_error(call, exc, mutation=False)
            else:
                self._seen[(process, key)] = s.version
                call.ok({"version": s.version, "value": s.attributes["v"].decode()})
            return
        new = f"{process}.{rng.randrange(1_000_000)}"
        call = history.invoke(process, key, "cas", {"expected": expected, "new": new})
        try:
            s = client.update(token, set={"v": new.encode()}, expected_version=expected)
        except VersionConflict:
            self._seen.pop((process, key), None)
            call.ok({"conflict": True})
        except NotFound:
            call.ok({"missing": True})
        except SessionQuorumError as exc:
            self._seen.pop((process, key), None)
            _finish_error(call, exc, mutation=True)
        else:
            self._seen[(process, key)] = s.version
            call.ok({"version": s.version})

    def verify(self, client: SessionClient, history: History) -> dict[str, Any]:
        ops = [op for op in history.ops() if op.key in self._tokens]
        results = check_all(ops, lambda key: RegisterModel(initial=(1, "0")), budget_s=self._budget_s)
        anomalies = [
            f"register {k}: not linearizable: {r.counterexample}"
            for k, r in results.items()
            if r.valid is False
        ]
        undecided = sorted(k for k, r in results.items() if r.valid is None)
        return {
            "anomalies": anomalies,
            "undecided_keys": undecided,
            "checked": {
                k: {"ops": r.ops, "explored": r.explored, "seconds": round(r.elapsed_s, 3)}
                for k, r in results.items()
            },
        }


class CounterWorkload(Workload):
    name = "counter"

    def __init__(self, keys: int = 3, budget_s: float = 60.0) -> None:
        self._keys = [f"c{i}" for i in range(keys)]
        self._tokens: dict[str, str] = {}
        self._budget_s = budget_s

    def setup(self, client: SessionClient) -> None:
        for key in self._keys:
            self._tokens[key] = client.create().token

    def step(self, client: SessionClient, process: int, rng: random.Random, history: History) -> None:
        key = rng.choice(self._keys)
        token = self._tokens[key]
        if rng.random() < 0.2:
            call = history.invoke(process, key, "read")
            try:
                s = client.validate(token)
            except SessionQuorumError as exc:
                _finish_error(call, exc, mutation=False)
            else:
                call.ok(int(s.attributes.get("n", b"0")))
            return
        call = history.invoke(process, key, "incr", 1)
        try:
            s = client.update(token, increment={"n": 1})
        except SessionQuorumError as exc:
            _finish_error(call, exc, mutation=True)
        else:
            call.ok(int(s.attributes["n"]))

    def verify(self, client: SessionClient, history: History) -> dict[str, Any]:
        ops = [op for op in history.ops() if op.key in self._tokens]
        anomalies: list[str] = []
        finals: dict[str, dict[str, int]] = {}
        for key, token in self._tokens.items():
            incrs = [op for op in ops if op.key == key and op.f == "incr"]
            acked = sum(1 for op in incrs if op.outcome == "ok")
            unknown = sum(1 for op in incrs if op.outcome == "unknown")
            final = int(client.validate(token).attributes.get("n", b"0"))
            finals[key] = {"final": final, "acked": acked, "unknown": unknown}
            if final < acked:
                anomalies.append(
                    f"counter {key}: {acked - final} acknowledged increment(s) lost ({final} < {acked})"
                )
            if final > acked + unknown:
                anomalies.append(
                    f"counter {key}: applied more increments than issued: "
                    f"{final} > {acked} acked + {unknown} unknown"
                )
        results = check_all(ops, lambda key: CounterModel(initial=0), budget_s=self._budget_s)
        anomalies += [
            f"counter {k}: not linearizable: {r.counterexample}"
            for k, r in results.items()
            if r.valid is False
        ]
        return {
            "anomalies": anomalies,
            "finals": finals,
            "undecided_keys": sorted(k for k, r in results.items() if r.valid is None),
        }


class LifecycleWorkload(Workload):
    """Each worker owns its sessions, so "after" is simply "a later op of the same worker"."""

    name = "lifecycle"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[int, dict[str, str]] = {}  # process -> handle -> current token
        self._dead: dict[int, list[tuple[str, str]]] = {}  # (handle, token) deleted or rotated away
        self._served_dead: list[str] = []

    def setup(self, client: SessionClient) -> None:
        return None

    def step(self, client: SessionClient, process: int, rng: random.Random, history: History) -> None:
        live = self._live.setdefault(process, {})
        dead = self._dead.setdefault(process, [])
        r = rng.random()
        if not live or r < 0.25:
            self._create(client, process, history, live)
        elif dead and r < 0.4:
            handle, token = rng.choice(dead)
            call = history.invoke(process, handle, "validate-dead")
            try:
                client.validate(token)
            except NotFound:
                call.ok({"missing": True})
            except SessionQuorumError as exc:
                _finish_error(call, exc, mutation=False)
            else:
                call.ok({"served": True})
                with self._lock:
                    self._served_dead.append(handle)
        else:
            handle = rng.choice(sorted(live))
            token = live[handle]
            kind = "rotate" if r < 0.6 else "delete" if r < 0.75 else "validate"
            call = history.invoke(process, handle, kind)
            try:
                if kind == "rotate":
                    new = client.rotate(token).token
                    live[handle] = new
                elif kind == "delete":
                    client.delete(token)
                    del live[handle]
                else:
                    client.validate(token)
            except NotFound:
                call.ok({"missing": True})
                del live[handle]  # it vanished: a bug the final check reports via history
            except SessionQuorumError as exc:
                _finish_error(call, exc, mutation=kind != "validate")
                if kind != "validate" and isinstance(exc, OutcomeUnknown):
                    del live[handle]  # unknown fate: stop tracking it
                return
            else:
                call.ok()
            if kind in ("rotate", "delete"):
                dead.append((handle, token))

    def _create(self, client: SessionClient, process: int, history: History, live: dict[str, str]) -> None:
        call = history.invoke(process, "new", "create")
        try:
            created = client.create(attributes={"p": str(process).encode()})
        except Unavailable as exc:
            call.fail(exc)
        except SessionQuorumError as exc:
            _finish_error(call, exc, mutation=True)
        else:
            live[created.session.handle] = created.token
            call.ok({"handle": created.session.handle})

    def verify(self, client: SessionClient, history: History) -> dict[str, Any]:
        anomalies = [
            f"lifecycle: deleted or rotated-away session {h} was served again" for h in self._served_dead
        ]
        vanished = [
            op
            for op in history.ops()
            if op.f in ("rotate", "delete", "validate") and op.result == {"missing": True}
        ]
        anomalies += [
            f"lifecycle: live session {op.key} reported missing by {op.f} at {op.start_s:.2f}s"
            for op in vanished
        ]
        for process, live in self._live.items():
            for handle, token in live.items():
                try:
                    client.validate(token)
                except NotFound:
                    anomalies.append(
                        f"lifecycle: acknowledged session {handle} of worker {process} is missing"
                    )
        for process, dead in self._dead.items():
            for handle, token in dead:
                try:
                    client.validate(token)
                except NotFound:
                    continue
                anomalies.append(
                    f"lifecycle: session {handle} of worker {process} is served after delete/rotate"
                )
        tracked = sum(len(v) for v in self._live.values())
        return {
            "anomalies": anomalies,
            "live_checked": tracked,
            "dead_checked": sum(len(v) for v in self._dead.values()),
        }

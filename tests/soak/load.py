"""The soak's load: mixed session traffic through the public client, with bounded state.

Three kinds of worker, each recording every call in the shared History with an honest
outcome (ok / fail / unknown, as the chaos workloads do):

- lifecycle: create / validate (some touching) / update / touch / rotate / delete on the
  worker's own sessions, at most `live_per_worker` live at once, and re-validation of tokens
  it deleted or rotated away. A live session answered "not found", or a dead token served,
  is an anomaly (a clock an hour ahead that replicated time followed would show here).
- register: compare-and-set and linearizable reads on a few shared keys (linearizability).
- counter: server-side increments and reads (linearizability, and final value bounds).

Register and counter keys live in generations replaced every `generation_s`: a key's
history stays short enough for the checker whatever the run's length, and retired
generations are checked (counter bounds) and deleted, so the state does not grow.
"""

from __future__ import annotations

import collections
import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from sessionquorum.client import (
    NotFound,
    OutcomeUnknown,
    SessionClient,
    SessionQuorumError,
    VersionConflict,
)
from tests.chaos.framework import CounterModel, History, Invocation, Op, RegisterModel, check_all

from .plan import SoakPlan

REGISTER_KEYS = 6
COUNTER_KEYS = 3
DEAD_KEPT = 64  # dead tokens a lifecycle worker keeps re-checking (and checks at the end)
CHECK_BUDGET_S = 60.0
REGISTER_KEY = re.compile(r"g\d+\.r\d+")
COUNTER_KEY = re.compile(r"g\d+\.c\d+")


def _finish_error(call: Invocation, exc: SessionQuorumError, mutation: bool) -> None:
    """Unknown only for a mutation that may have been applied; a failed read had no effect."""
    if mutation and isinstance(exc, OutcomeUnknown):
        call.unknown(exc)
    else:
        call.fail(exc)


@dataclass
class _Generation:
    index: int
    registers: dict[str, str]  # key -> token
    counters: dict[str, str]


@dataclass
class _Lifecycle:
    live: dict[str, str] = field(default_factory=dict)  # handle -> token, oldest first
    dead: collections.deque[tuple[str, str]] = field(
        default_factory=lambda: collections.deque(maxlen=DEAD_KEPT)
    )


class SoakLoad:
    """The workers' shared state; `step` is one call of one worker, `maintain` rolls keys."""

    def __init__(self, plan: SoakPlan, history: History) -> None:
        self._plan = plan
        self._history = history
        self._lock = threading.Lock()
        self._generations: list[_Generation] = []
        self._retired: list[int] = []
        self._seen: dict[tuple[int, str], int] = {}
        self._lifecycles: dict[int, _Lifecycle] = {}
        self.anomalies: list[str] = []
        self.generation_started_s = 0.0

    # -- roles ----------------------------------------------------------------------------

    def role(self, process: int) -> str:
        p = self._plan
        if process < p.lifecycle_workers:
            return "lifecycle"
        return "register" if process < p.lifecycle_workers + p.register_workers else "counter"

    def step(self, client: SessionClient, process: int, rng: random.Random) -> None:
        role = self.role(process)
        if role == "lifecycle":
            self._lifecycle_step(client, process, rng)
        elif role == "register":
            self._register_step(client, process, rng)
        else:
            self._counter_step(client, process, rng)

    # -- generations of shared keys -------------------------------------------------------

    def _create(self, client: SessionClient, attributes: dict[str, bytes] | None = None) -> str:
        idle = self._plan.idle_timeout_s
        return client.create(attributes=attributes, idle_timeout_s=idle, absolute_timeout_s=4 * idle).token

    def new_generation(self, client: SessionClient) -> None:
        """Create the next generation's sessions; workers switch to it at once."""
        index = len(self._generations)
        registers = {f"g{index}.r{i}": self._create(client, {"v": b"0"}) for i in range(REGISTER_KEYS)}
        counters = {f"g{index}.c{i}": self._create(client) for i in range(COUNTER_KEYS)}
        with self._lock:
            self._generations.append(_Generation(index, registers, counters))
        self.generation_started_s = self._history.now()

    def maintain(self, client: SessionClient) -> None:
        """Roll to a new generation when due; retire the one before the previous.

        Workers stopped using a generation two switches ago, and every call has a deadline
        far shorter than a generation, so nothing is in flight on what is retired.
        """
        if self._history.now() - self.generation_started_s >= self._plan.generation_s:
            self.new_generation(client)
        with self._lock:
            due = [g for g in self._generations[:-2] if g.index not in self._retired]
        for generation in due:
            self._retire(client, generation)

    def _retire(self, client: SessionClient, generation: _Generation) -> None:
        ops = self._history.ops()
        self.anomalies += self._check_counters(client, generation.counters, ops)
        for token in [*generation.registers.values(), *generation.counters.values()]:
            client.delete(token)
        self._retired.append(generation.index)

    def _current(self) -> _Generation:
        with self._lock:
            return self._generations[-1]

    # -- workers --------------------------------------------------------------------------

    def _register_step(self, client: SessionClient, process: int, rng: random.Random) -> None:
        key, token = rng.choice(sorted(self._current().registers.items()))
        expected = self._seen.get((process, key))
        if expected is None or rng.random() < 0.4:
            call = self._history.invoke(process, key, "read")
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
        call = self._history.invoke(process, key, "cas", {"expected": expected, "new": new})
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

    def _counter_step(self, client: SessionClient, process: int, rng: random.Random) -> None:
        key, token = rng.choice(sorted(self._current().counters.items()))
        if rng.random() < 0.25:
            call = self._history.invoke(process, key, "read")
            try:
                s = client.validate(token)
            except SessionQuorumError as exc:
                _finish_error(call, exc, mutation=False)
            else:
                call.ok(int(s.attributes.get("n", b"0")))
            return
        call = self._history.invoke(process, key, "incr", 1)
        try:
            s = client.update(token, increment={"n": 1})
        except SessionQuorumError as exc:
            _finish_error(call, exc, mutation=True)
        else:
            call.ok(int(s.attributes["n"]))

    def _lifecycle_step(self, client: SessionClient, process: int, rng: random.Random) -> None:
        mine = self._lifecycles.setdefault(process, _Lifecycle())
        r = rng.random()
        if not mine.live or (r < 0.2 and len(mine.live) < self._plan.live_per_worker):
            self._lifecycle_create(client, process, mine)
            return
        if r < 0.2:  # at the cap: end the oldest instead, so the state stays bounded
            handle = next(iter(mine.live))
            kind = "delete"
        elif r < 0.3 and mine.dead:
            self._validate_dead(client, process, mine, rng)
            return
        else:
            handle = rng.choice(sorted(mine.live))
            kind = (
                "rotate" if r < 0.38 else "delete" if r < 0.45 else "touch" if r < 0.55
                else "update" if r < 0.7 else "validate"
            )  # fmt: skip
        token = mine.live[handle]
        call = self._history.invoke(process, handle, kind)
        try:
            if kind == "rotate":
                mine.live[handle] = client.rotate(token).token
            elif kind == "delete":
                existed = client.delete(token)
                del mine.live[handle]
                if not existed:
                    self.anomalies.append(f"lifecycle: live session {handle} did not exist at its delete")
            elif kind == "touch":
                client.touch(token)
            elif kind == "update":
                client.update(token, set={"cart": rng.randbytes(rng.randrange(50, 300))})
            else:
                client.validate(token, touch=rng.random() < 0.3)
        except NotFound:
            call.ok({"missing": True})
            del mine.live[handle]
            self.anomalies.append(f"lifecycle: live session {handle} answered not found by {kind}")
            return
        except SessionQuorumError as exc:
            _finish_error(call, exc, mutation=kind != "validate")
            if kind in ("rotate", "delete") and isinstance(exc, OutcomeUnknown):
                del mine.live[handle]  # its fate is unknown: stop tracking it
            return
        call.ok()
        if kind in ("rotate", "delete"):
            mine.dead.append((handle, token))

    def _lifecycle_create(self, client: SessionClient, process: int, mine: _Lifecycle) -> None:
        call = self._history.invoke(process, "new", "create")
        try:
            created = client.create(
                attributes={"p": str(process).encode()},
                idle_timeout_s=self._plan.idle_timeout_s,
                absolute_timeout_s=4 * self._plan.idle_timeout_s,
            )
        except SessionQuorumError as exc:
            _finish_error(call, exc, mutation=True)
        else:
            mine.live[created.session.handle] = created.token
            call.ok({"handle": created.session.handle})

    def _validate_dead(
        self, client: SessionClient, process: int, mine: _Lifecycle, rng: random.Random
    ) -> None:
        handle, token = rng.choice(list(mine.dead))
        call = self._history.invoke(process, handle, "validate-dead")
        try:
            client.validate(token)
        except NotFound:
            call.ok({"missing": True})
        except SessionQuorumError as exc:
            call.fail(exc)
        else:
            call.ok({"served": True})
            self.anomalies.append(f"lifecycle: deleted or rotated-away session {handle} was served again")

    # -- checks ---------------------------------------------------------------------------

    def _check_counters(self, client: SessionClient, counters: dict[str, str], ops: list[Op]) -> list[str]:
        found: list[str] = []
        for key, token in counters.items():
            incrs = [op for op in ops if op.key == key and op.f == "incr"]
            acked = sum(op.outcome == "ok" for op in incrs)
            unknown = sum(op.outcome == "unknown" for op in incrs)
            try:
                final = int(client.validate(token).attributes.get("n", b"0"))
            except NotFound:
                found.append(f"counter {key}: its session is gone ({acked} acknowledged increments)")
                continue
            if not acked <= final <= acked + unknown:
                found.append(f"counter {key}: final {final} outside [{acked}, {acked} + {unknown} unknown]")
        return found

    def verify(self, client: SessionClient) -> dict[str, Any]:
        """After the run, on the healed cluster: every remaining check; returns the findings."""
        try:
            return self._verify(client)
        except SessionQuorumError as exc:  # the healed cluster must answer: not answering is a finding
            return {"anomalies": [*self.anomalies, f"verification failed: {exc!r}"], "undecided_keys": ["*"]}

    def _verify(self, client: SessionClient) -> dict[str, Any]:
        ops = self._history.ops()
        anomalies = list(self.anomalies)
        with self._lock:
            remaining = [g for g in self._generations if g.index not in self._retired]
        for generation in remaining:
            anomalies += self._check_counters(client, generation.counters, ops)
        for process, mine in self._lifecycles.items():
            for handle, token in mine.live.items():
                try:
                    client.validate(token)
                except NotFound:
                    anomalies.append(
                        f"lifecycle: acknowledged session {handle} of worker {process} is missing"
                    )
            for handle, token in mine.dead:
                try:
                    client.validate(token)
                except NotFound:
                    continue
                anomalies.append(
                    f"lifecycle: session {handle} of worker {process} is served after delete/rotate"
                )
        registers = check_all(
            [op for op in ops if REGISTER_KEY.fullmatch(op.key)],
            lambda key: RegisterModel(initial=(1, "0")),
            budget_s=CHECK_BUDGET_S,
        )
        counters = check_all(
            [op for op in ops if COUNTER_KEY.fullmatch(op.key)],
            lambda key: CounterModel(initial=0),
            budget_s=CHECK_BUDGET_S,
        )
        results = {**registers, **counters}
        anomalies += [
            f"{k}: not linearizable: {r.counterexample}" for k, r in results.items() if r.valid is False
        ]
        return {
            "anomalies": anomalies,
            "undecided_keys": sorted(k for k, r in results.items() if r.valid is None),
            "checked_keys": len(results),
            "checked_ops": sum(r.ops for r in results.values()),
            "check_s": round(sum(r.elapsed_s for r in results.values()), 3),
            "generations": len(self._generations),
            "lifecycle_live": sum(len(m.live) for m in self._lifecycles.values()),
        }

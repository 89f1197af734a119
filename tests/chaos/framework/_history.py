"""What a chaos run records: one `Op` per client call, with its interval and its outcome.

A checker can only judge what was recorded honestly, and three outcomes are needed for that:

    ok       the call returned a definite answer (`result`), which may be a domain answer
             such as a version conflict or "not found": those did go through the log
    fail     the call definitely had no effect (e.g. `Unavailable`: no attempt was applied)
    unknown  the call may or may not have taken effect, now or later (`OutcomeUnknown`, a
             timeout): recording it as "fail" would make the checker reject correct runs,
             because such writes are often applied (shared/reference/raft-pitfalls.md)

Times are seconds since the `History` was created, from `time.monotonic()`: wall-clock time
can jump (and a clock-skew nemesis makes it jump on purpose), which would reorder intervals.
`end_s` is taken when the call returned or gave up, for every outcome; the checker itself
treats an unknown op as never ending.

Workers record through `History.invoke(...)`, which stamps the start before the call and the
end when the caller reports how it went:

    call = history.invoke(process, key, "cas", {"expected": 3, "new": "x"})
    try:
        reply = client.update(...)
    except VersionConflict:
        call.ok({"conflict": True})
    except Unavailable as exc:
        call.fail(exc)
    except OutcomeUnknown as exc:
        call.unknown(exc)
    else:
        call.ok({"version": reply.version})
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

Outcome = Literal["ok", "fail", "unknown"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "fail", "unknown")


@dataclass(frozen=True, slots=True)
class Op:
    """One client call: who issued it, on what, when, and how it ended.

    A worker (`process`) has one op in flight at a time, so its ops never overlap; ops of
    different processes may. `value` and `result` are JSON-able so a report can replay them.
    """

    process: int
    key: str
    f: str
    value: Any
    start_s: float
    end_s: float
    outcome: Outcome
    result: Any = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Op:
        outcome = data["outcome"]
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r} in {data!r}")
        return Op(
            process=int(data["process"]),
            key=str(data["key"]),
            f=str(data["f"]),
            value=data.get("value"),
            start_s=float(data["start_s"]),
            end_s=float(data["end_s"]),
            outcome=outcome,
            result=data.get("result"),
            error=data.get("error"),
        )


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """One nemesis action, from inject to heal; `end_s` is None while it is still active.

    An instant fault (kill -9) may use `end_s == start_s`, or the restart time as its end.
    """

    name: str
    start_s: float
    end_s: float | None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> FaultWindow:
        end = data.get("end_s")
        return FaultWindow(
            name=str(data["name"]),
            start_s=float(data["start_s"]),
            end_s=None if end is None else float(end),
            detail=str(data.get("detail", "")),
        )


class History:
    """A thread-safe recorder of ops, with its own monotonic time origin.

    Workers and the nemesis share one instance, so fault windows and ops are on one clock.
    """

    def __init__(self) -> None:
        self._origin = time.monotonic()
        self._lock = threading.Lock()
        self._ops: list[Op] = []

    def now(self) -> float:
        """Seconds since this history was created."""
        return time.monotonic() - self._origin

    def record(self, op: Op) -> None:
        if op.end_s < op.start_s:
            raise ValueError(f"op ends before it starts: {op!r}")
        with self._lock:
            self._ops.append(op)

    def invoke(self, process: int, key: str, f: str, value: Any = None) -> Invocation:
        """Stamp the start of a call now; the returned handle records it when it ends."""
        return Invocation(self, process, key, f, value, self.now())

    def ops(self) -> list[Op]:
        """Every recorded op, sorted by start time (a copy: recording may go on)."""
        with self._lock:
            snapshot = list(self._ops)
        return sorted(snapshot, key=lambda op: (op.start_s, op.end_s, op.process))

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

    def to_json(self) -> list[dict[str, Any]]:
        return [op.to_json() for op in self.ops()]

    @staticmethod
    def from_json(data: list[dict[str, Any]]) -> History:
        """Rebuild a recorded history (e.g. from a report); `now()` on it means nothing."""
        history = History()
        for item in data:
            history.record(Op.from_json(item))
        return history


class Invocation:
    """A call in flight: exactly one of `ok`, `fail` or `unknown` records it.

    Finishing twice raises, because a worker that does so has misclassified an outcome.
    """

    __slots__ = ("_done", "_history", "f", "key", "process", "start_s", "value")

    def __init__(self, history: History, process: int, key: str, f: str, value: Any, start_s: float) -> None:
        self._history = history
        self._done = False
        self.process = process
        self.key = key
        self.f = f
        self.value = value
        self.start_s = start_s

    def ok(self, result: Any = None) -> Op:
        """A definite answer, including domain answers such as a conflict or "missing"."""
        return self._finish("ok", result, None)

    def fail(self, error: BaseException | str) -> Op:
        """Definitely not applied (e.g. `Unavailable`): the checker drops the op."""
        return self._finish("fail", None, _describe(error))

    def unknown(self, error: BaseException | str) -> Op:
        """May have been applied, now or later (e.g. `OutcomeUnknown`, a client timeout)."""
        return self._finish("unknown", None, _describe(error))

    def _finish(self, outcome: Outcome, result: Any, error: str | None) -> Op:
        if self._done:
            raise RuntimeError(f"{self.f} on {self.key!r} by process {self.process} was already recorded")
        self._done = True
        op = Op(
            process=self.process,
            key=self.key,
            f=self.f,
            value=self.value,
            start_s=self.start_s,
            end_s=self._history.now(),
            outcome=outcome,
            result=result,
            error=error,
        )
        self._history.record(op)
        return op


def _describe(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    return f"{type(error).__name__}: {error}"

"""Is a recorded history linearizable? Wing & Gong's search with Lowe's memoisation, per key.

No checker exists on PyPI, and the read path is exactly where Raft stores go wrong (stale
reads from an isolated old leader: shared/reference/raft-pitfalls.md), so we carry one.

Semantics are those of Knossos and Porcupine:
- an "ok" op took effect atomically at one instant between its start and end, with the
  recorded result;
- a "fail" op never took effect: it is dropped;
- an "unknown" op may take effect at any instant after its start (its end is +infinity), or
  never: it is optional, and the history may end with it still pending.

The search (Lowe, "Testing for linearizability", 2017; Porcupine's `checkSingle`) walks the
call and return events of the ok ops in time order. An op whose call comes before the first
return in the list may be linearized next, because no pending op ended before it started;
reaching that return means the op it ends can no longer be placed, so the search backtracks.
A configuration (which ops are linearized, model state) reached before is not explored
again. Three reductions, each sound, keep it near-linear on real histories:
- a read-only op (`Model.read_only`) that is legal now is placed at once, without trying
  the alternatives: if no completion starts with it, none exists;
- an op the model calls hopeless (`HOPELESS`: it can never become legal again, e.g. a read
  of a version the register has passed) ends the branch at once, instead of after every
  ordering of the ops that overlap it has been tried;
- unknown ops are tried only when no ok op can go next, newest first, and among unknown ops
  with identical compiled effects only the earliest-started pending one is a candidate.
The search is iterative (histories are far deeper than Python's recursion limit) and bounded
by a budget, because it is exponential in the worst case: past the budget the answer is
`valid=None`, "undecided", never a hang.

Keys are independent objects, so each key is checked on its own (`check_all`). The models
(`RegisterModel`, `CounterModel`) live in `_models.py`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Generic, TypeVar

from ._history import Op

S = TypeVar("S", bound=Hashable)
P = TypeVar("P")

# A runaway search fills memory (measured: 5M steps, ~140 MB, ~3 s): bound both.
DEFAULT_MAX_EXPLORED: Final = 10_000_000
DEFAULT_BUDGET_S: Final = 60.0
# Reading the clock costs more than a step: look at it every this many steps.
_CLOCK_EVERY: Final = 1024
_CONTEXT_OPS: Final = 4
_FORCED, _OK, _UNKNOWN = range(3)


class Illegal(Enum):
    """What `Model.step` returns for an op that cannot take effect in a state."""

    ILLEGAL = "illegal here"
    HOPELESS = "illegal here and in every state reachable from here"


ILLEGAL: Final = Illegal.ILLEGAL
HOPELESS: Final = Illegal.HOPELESS


class Model(ABC, Generic[S, P]):
    """A sequential specification: states (hashable, for memoisation) and legal steps.

    `prepare` runs once per op, so `step`, which runs millions of times, sees a compact form.
    """

    @abstractmethod
    def initial(self) -> S:
        """The state before the first op."""

    @abstractmethod
    def prepare(self, op: Op) -> P | None:
        """Validate an ok or unknown op and compile it for `step`.

        Return None for an op that neither changes nor observes state (an unknown read).
        Raise ValueError for an op the workload recorded in a shape the model cannot judge:
        calling it illegal would blame the store for a workload bug.
        """

    def prepare_all(self, ops: Sequence[Op]) -> list[P | None]:
        """Prepare one key's ok and unknown ops together.

        Override to use the whole history: to merge states no op can tell apart, or to know
        that the state only moves forward (which makes `HOPELESS` sound).
        """
        return [self.prepare(op) for op in ops]

    @abstractmethod
    def step(self, state: S, call: P) -> S | Illegal:
        """The state after `call` takes effect in `state`, or ILLEGAL (or HOPELESS).

        For an unknown op, ILLEGAL is right wherever "it took effect" is impossible or changes
        nothing: the search then treats it as never having happened. HOPELESS only when no
        sequence of this key's ops can lead to a state where `call` is legal.
        """

    def read_only(self, call: P) -> bool:
        """True if `call` leaves the state unchanged in every state where it is legal.

        Say False when unsure: a delete is legal anywhere and changes most states.
        """
        return False

    def describe(self, state: S) -> str:
        return repr(state)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict for one key: True, False, or None when the budget ran out first."""

    valid: bool | None
    key: str
    ops: int
    explored: int
    elapsed_s: float
    counterexample: str | None = None


def check(
    ops: Sequence[Op],
    model: Model[Any, Any],
    *,
    max_explored: int = DEFAULT_MAX_EXPLORED,
    budget_s: float = DEFAULT_BUDGET_S,
) -> CheckResult:
    """Check the ops of one key against `model` (`check_all` partitions many keys)."""
    keys = {op.key for op in ops}
    if len(keys) > 1:
        raise ValueError(f"check() takes the ops of one key, got {len(keys)} keys: use check_all()")
    return _Search(next(iter(keys), ""), ops, model).run(max_explored, budget_s)


def check_all(
    ops: Sequence[Op],
    model: Model[Any, Any] | Callable[[str], Model[Any, Any]],
    *,
    max_explored: int = DEFAULT_MAX_EXPLORED,
    budget_s: float = DEFAULT_BUDGET_S,
) -> dict[str, CheckResult]:
    """Check each key on its own; `model` is shared, or a factory `key -> Model`.

    The budget applies to each key.
    """
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    return {
        key: check(
            by_key[key],
            model if isinstance(model, Model) else model(key),
            max_explored=max_explored,
            budget_s=budget_s,
        )
        for key in sorted(by_key)
    }


def overall(results: Mapping[str, CheckResult]) -> bool | None:
    """False if any key is not linearizable, else None if any is undecided, else True."""
    verdicts = [r.valid for r in results.values()]
    if False in verdicts:
        return False
    return None if None in verdicts else True


class _Search:
    """One key's search: ok ops in an event list (dancing links), unknown ops in another."""

    def __init__(self, key: str, ops: Sequence[Op], model: Model[Any, Any]) -> None:
        self.started = time.perf_counter()  # preparing is part of the cost
        self.key = key
        self.model = model
        self.ok: list[tuple[Op, Any]] = []
        self.unknown: list[tuple[Op, Any]] = []
        kept = sorted((op for op in ops if op.outcome != "fail"), key=lambda o: (o.start_s, o.end_s))
        for op, call in zip(kept, model.prepare_all(kept), strict=True):
            if call is not None:
                (self.ok if op.outcome == "ok" else self.unknown).append((op, call))

    def run(self, max_explored: int, budget_s: float) -> CheckResult:
        started = self.started
        deadline = started + budget_s
        n, m = len(self.ok), len(self.unknown)
        # Ok ops: node 0 is the head, 2n+1 the tail. Calls sort before returns at equal
        # times, so ops whose intervals touch count as concurrent (the permissive reading).
        events = sorted(
            (op.end_s if k else op.start_s, k, i) for i, (op, _) in enumerate(self.ok) for k in (0, 1)
        )
        tail = 2 * n + 1
        nxt, prv = [*range(1, tail + 1), -1], [-1, *range(tail)]
        node_op, node_time = [-1] * (tail + 1), [math.inf] * (tail + 1)
        is_call, match, call_node = [False] * (tail + 1), [-1] * (tail + 1), [0] * n
        for node, (at, kind, i) in enumerate(events, start=1):
            node_op[node], node_time[node], is_call[node] = i, at, not kind
            if kind:
                match[call_node[i]] = node
            else:
                call_node[i] = node
        # Unknown ops, in start order: nodes 0..m-1, head m, tail m+1.
        uhead = m
        unxt, uprv = [-1] * (m + 2), [-1] * (m + 2)
        for a, b in itertools.pairwise([uhead, *range(m), m + 1]):
            unxt[a], uprv[b] = b, a
        ustart = [op.start_s for op, _ in self.unknown]
        pred = _class_predecessors([call for _, call in self.unknown])
        udone = [False] * m

        step = self.model.step
        ok_calls = [call for _, call in self.ok]
        read_only = [self.model.read_only(call) for call in ok_calls]
        unk_calls = [call for _, call in self.unknown]
        state = self.model.initial()
        ok_lin = unk_lin = 0
        ok_left = n
        # A frame: (main node, unknown index or -1, state before, forced). For an unknown op
        # the main node is the return that blocked the scan, where that scan resumes.
        stack: list[tuple[int, int, Any, bool]] = []
        # Ok ops are linearized roughly in start order, so their set is stored relative to
        # the lowest pending one: a narrow window, and small memo entries.
        seen: set[tuple[int, int, int, Any]] = set()
        explored, best_depth, best_message = 0, -1, ""
        # Each configuration is scanned in up to three passes: _FORCED places a legal
        # read-only op, _OK tries each ok op in call order, _UNKNOWN each unknown op,
        # newest first (one that took effect usually did so soon after it started, while
        # those that never did pile up at the old end).
        node, u, phase = nxt[0], -1, _FORCED
        while ok_left:
            if phase != _UNKNOWN and is_call[node]:
                explored += 1
                if explored > max_explored or (
                    not explored % _CLOCK_EVERY and time.perf_counter() > deadline
                ):
                    return self._exhausted(explored, started, best_depth, best_message)
                i = node_op[node]
                new_state = step(state, ok_calls[i])
                forced = read_only[i]
                if new_state is HOPELESS:
                    if len(stack) > best_depth:
                        best_depth = len(stack)
                        best_message = self._stuck(
                            i, state, stack, (nxt, node_op, is_call, node_time), unk_lin
                        )
                elif new_state is ILLEGAL or (phase == _FORCED and not forced):
                    node = nxt[node]
                    continue
                else:
                    new_ok = ok_lin | (1 << i)
                    base = (~new_ok & (new_ok + 1)).bit_length() - 1
                    config = (base, new_ok >> base, unk_lin, new_state)
                    if config not in seen:
                        seen.add(config)
                        stack.append((node, -1, state, forced))
                        state, ok_lin = new_state, new_ok
                        ok_left -= 1
                        ret = match[node]
                        nxt[prv[node]], prv[nxt[node]] = nxt[node], prv[node]
                        nxt[prv[ret]], prv[nxt[ret]] = nxt[ret], prv[ret]
                        node, phase = nxt[0], _FORCED
                        continue
                    if not forced:
                        node = nxt[node]
                        continue
                    # A forced op whose configuration failed before: this one fails too.
            elif phase == _FORCED:
                node, phase = nxt[0], _OK
                continue
            else:
                # `node` is the first return, and no ok op could go before it: try the
                # unknown ops that started by then.
                limit = node_time[node]
                if phase != _UNKNOWN:
                    phase = _UNKNOWN
                    u = bisect.bisect_right(ustart, limit) - 1
                    while u >= 0 and udone[u]:
                        u -= 1
                    u = uhead if u < 0 else u
                while u != uhead:
                    if pred[u] < 0 or udone[pred[u]]:
                        explored += 1
                        if explored > max_explored or (
                            not explored % _CLOCK_EVERY and time.perf_counter() > deadline
                        ):
                            return self._exhausted(explored, started, best_depth, best_message)
                        new_state = step(state, unk_calls[u])
                        if new_state is not ILLEGAL and new_state is not HOPELESS:
                            new_unk = unk_lin | (1 << u)
                            base = (~ok_lin & (ok_lin + 1)).bit_length() - 1
                            config = (base, ok_lin >> base, new_unk, new_state)
                            if config not in seen:
                                seen.add(config)
                                stack.append((node, u, state, False))
                                state, unk_lin, udone[u] = new_state, new_unk, True
                                unxt[uprv[u]], uprv[unxt[u]] = unxt[u], uprv[u]
                                break
                    u = uprv[u]
                if u != uhead:
                    node, u, phase = nxt[0], -1, _FORCED
                    continue
                if len(stack) > best_depth:
                    best_depth = len(stack)
                    best_message = self._stuck(
                        node_op[node], state, stack, (nxt, node_op, is_call, node_time), unk_lin
                    )
            # A dead end. Undo the latest step and resume after it, or further back if it was
            # forced (nothing else was worth trying there).
            forced = True
            while forced:
                if not stack:
                    return self._result(False, explored, started, best_message)
                node, u, state, forced = stack.pop()
                if u < 0:
                    ok_lin ^= 1 << node_op[node]
                    ok_left += 1
                    # Unlift in the reverse order of the lift (the stack guarantees it).
                    ret = match[node]
                    nxt[prv[ret]] = prv[nxt[ret]] = ret
                    nxt[prv[node]] = prv[nxt[node]] = node
                else:
                    unk_lin ^= 1 << u
                    udone[u] = False
                    unxt[uprv[u]] = uprv[unxt[u]] = u
            if u < 0:
                node, phase = nxt[node], _OK
            else:
                u, phase = uprv[u], _UNKNOWN
        return self._result(True, explored, started, None)

    def _result(self, valid: bool | None, explored: int, started: float, message: str | None) -> CheckResult:
        elapsed = time.perf_counter() - started
        return CheckResult(valid, self.key, len(self.ok) + len(self.unknown), explored, elapsed, message)

    def _exhausted(self, explored: int, started: float, best_depth: int, best_message: str) -> CheckResult:
        total = len(self.ok) + len(self.unknown)
        message = (
            f"budget exhausted after {explored} steps; at most {max(best_depth, 0)} of {total} ops placed"
        )
        if best_message:
            message += f"; the deepest dead end so far:\n{best_message}"
        return self._result(None, explored, started, message)

    def _stuck(
        self, blocked_i: int, state: Any, stack: list[tuple[int, int, Any, bool]], links: _Links, unk_lin: int
    ) -> str:
        """Describe a dead end: the op that could not be placed, the state, and its context."""
        nxt, node_op, is_call, node_time = links
        blocked = self.ok[blocked_i][0]
        lines = [
            f"key {self.key!r}: no linearization places {_fmt(blocked)}",
            f"  model state when it had to take effect: {self.model.describe(state)}",
            f"  linearized before it ({len(stack)} of {len(self.ok) + len(self.unknown)} ops), latest last:",
        ]
        for node, u, _, _ in stack[-_CONTEXT_OPS:]:
            lines.append(f"    {_fmt(self.ok[node_op[node]][0] if u < 0 else self.unknown[u][0])}")
        pending, node = [], nxt[0]
        while is_call[node]:
            if node_op[node] != blocked_i:
                pending.append(self.ok[node_op[node]][0])
            node = nxt[node]
        limit = node_time[node]
        pending += [
            op for u, (op, _) in enumerate(self.unknown) if not unk_lin >> u & 1 and op.start_s <= limit
        ]
        if pending:
            lines.append("  other ops that could have taken effect then (none led to a linearization):")
            lines += [f"    {_fmt(op)}" for op in pending[:_CONTEXT_OPS]]
            if len(pending) > _CONTEXT_OPS:
                lines.append(f"    ... and {len(pending) - _CONTEXT_OPS} more")
        return "\n".join(lines)


_Links = tuple[list[int], list[int], list[bool], list[float]]


def _class_predecessors(calls: list[Any]) -> list[int]:
    """For each unknown op, the previous one with an identical compiled call (or -1).

    Identical pending unknown ops are interchangeable, so the search places them in start
    order only (op k once its predecessor is placed): k+1 choices instead of 2^k subsets.
    """
    last: dict[Any, int] = {}
    pred: list[int] = []
    for k, call in enumerate(calls):
        try:
            pred.append(last.get(call, -1))
        except TypeError:  # unhashable: no symmetry to exploit
            pred.append(-1)
            continue
        last[call] = k
    return pred


def _fmt(op: Op) -> str:
    shown = f"p{op.process} {op.f}({op.value!r})"
    if op.outcome == "ok":
        return f"{shown} -> {op.result!r} from {op.start_s:.3f}s to {op.end_s:.3f}s"
    return f"{shown} [{op.outcome}: {op.error}] from {op.start_s:.3f}s, never ends"

"""The models the linearizability checker tests histories against: a register, a counter.

`RegisterModel` is a session attribute with the session's version (read / cas / write /
create / delete); `CounterModel` a server-side counter (incr / read). Each compiles an op
once (`prepare_all`) into small tuples, because `step` runs millions of times per check.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Final

from ._history import Op
from ._linearizability import HOPELESS, ILLEGAL, Illegal, Model

# A register state: (version, value), or None while the object does not exist.
RegisterState = tuple[int, Hashable] | None
# Compiled op kinds: `step` runs millions of times, so it compares small ints, not strings.
_READ, _MISSING_ANSWER, _CAS, _CAS_CONFLICT, _WRITE, _WRITE_MAYBE = range(6)
_DELETE, _CREATE, _CREATE_EXISTS, _NEVER = range(6, 10)
_READ_ONLY: Final = frozenset({_READ, _MISSING_ANSWER, _CAS_CONFLICT, _CREATE_EXISTS, _NEVER})
# (kind, a, b, forward): `forward` says this key's versions never go back (it has no delete).
_RegisterCall = tuple[int, Any, Any, bool]


class RegisterModel(Model[RegisterState, _RegisterCall]):
    """A versioned register, the shape of a session: every change bumps the version.

    Ops, and the results a workload records for ok ones (an unknown op has none):
        read                      {"version": v, "value": x} or {"missing": True}
        cas {"expected": v, "new": x}
                                  {"version": v + 1}; {"conflict": True} (VersionConflict: the
                                  version was not v); {"missing": True} (NotFound)
        write x (unconditional)   {"version": n} (the old version + 1) or {"missing": True}
        create x                  {"version": n} (it was missing; unknown: 1) or {"exists": True}
        delete                    anything; {"missing": True} says it already was missing
    Values are compared after turning lists into tuples and dicts into sorted item tuples.
    With the whole history (`prepare_all`), a written value that no read returns becomes one
    placeholder: states differing only in such values behave alike, and unknown writes of
    them become interchangeable, which keeps runs with many timeouts checkable.
    """

    def __init__(self, initial: tuple[int, Any] | None = None) -> None:
        self._initial: RegisterState = None if initial is None else (initial[0], _freeze(initial[1]))

    def initial(self) -> RegisterState:
        return self._initial

    def prepare(self, op: Op) -> _RegisterCall | None:
        return self._prepare(op, None, False)

    def prepare_all(self, ops: Sequence[Op]) -> list[_RegisterCall | None]:
        read = {
            _freeze(_field(op.result, "value", op))
            for op in ops
            if op.f == "read" and op.outcome == "ok" and not _says(op.result, "missing")
        }
        # Only a delete (then a create) takes a version back, to 1.
        forward = not any(op.f == "delete" for op in ops)
        return [self._prepare(op, read, forward) for op in ops]

    def _prepare(self, op: Op, read: set[Hashable] | None, fwd: bool) -> _RegisterCall | None:
        def written(value: Any) -> Hashable:
            frozen = _freeze(value)
            return frozen if read is None or frozen in read else _UNREAD

        ok, value, result = op.outcome == "ok", op.value, op.result
        missing = ok and _says(result, "missing")
        if op.f == "read":
            if not ok:
                return None
            if missing:
                return (_MISSING_ANSWER, None, None, fwd)
            return (_READ, (_int(result, "version", op), _freeze(_field(result, "value", op))), None, fwd)
        if op.f == "delete":
            return (_MISSING_ANSWER, None, None, fwd) if missing else (_DELETE, None, None, fwd)
        if missing:
            if op.f not in ("cas", "write"):
                raise ValueError(f"{op.f} cannot answer missing: {op!r}")
            return (_MISSING_ANSWER, None, None, fwd)
        if op.f == "cas":
            expected = _int(value, "expected", op)
            new = (expected + 1, written(_field(value, "new", op)))
            if not ok:
                return (_CAS, expected, new, fwd)  # took effect iff the version matched
            if _says(result, "conflict"):
                return (_CAS_CONFLICT, expected, None, fwd)
            if _int(result, "version", op) != expected + 1:
                return (_NEVER, None, None, fwd)  # a version no cas can produce: an anomaly
            return (_CAS, expected, new, fwd)
        if op.f == "write":
            if not ok:
                return (_WRITE_MAYBE, written(value), None, fwd)
            return (_WRITE, _int(result, "version", op), written(value), fwd)
        if op.f == "create":
            if ok and _says(result, "exists"):
                return (_CREATE_EXISTS, None, None, fwd)
            version = _int(result, "version", op) if ok else 1
            return (_CREATE, (version, written(value)), None, fwd)
        raise ValueError(f"RegisterModel has no op {op.f!r}: {op!r}")

    def step(self, state: RegisterState, call: _RegisterCall) -> RegisterState | Illegal:
        kind, a, b, forward = call
        if kind == _READ:
            if state == a:
                return state
            # A read of a version the register has reached or passed can never be legal.
            return HOPELESS if forward and state is not None and state[0] >= a[0] else ILLEGAL
        if kind in (_MISSING_ANSWER, _CREATE):
            if state is None:
                return state if kind == _MISSING_ANSWER else a
            return HOPELESS if forward else ILLEGAL
        if kind == _DELETE:
            return None
        if kind == _NEVER:
            return HOPELESS
        if state is None:
            return ILLEGAL
        if kind == _CAS:
            if state[0] == a:
                return b  # type: ignore[no-any-return]
            return HOPELESS if forward and state[0] > a else ILLEGAL
        if kind == _CAS_CONFLICT:
            return state if state[0] != a else ILLEGAL
        if kind == _WRITE:
            if a == state[0] + 1:
                return (a, b)
            return HOPELESS if forward and state[0] >= a else ILLEGAL
        if kind == _WRITE_MAYBE:
            return (state[0] + 1, a)
        return state  # _CREATE_EXISTS: it existed, nothing changed

    def read_only(self, call: _RegisterCall) -> bool:
        return call[0] in _READ_ONLY

    def describe(self, state: RegisterState) -> str:
        return "missing" if state is None else f"version {state[0]}, value {state[1]!r}"


# (is_incr, delta or the value read, the value after an incr or None, forward)
_CounterCall = tuple[bool, int, int | None, bool]


class CounterModel(Model[int, _CounterCall]):
    """A counter: `incr` by `value` (default 1; result ignored, or the new value when it is
    recorded as an int or {"value": n}); `read` with the count (or {"value": n}) as result."""

    def __init__(self, initial: int = 0) -> None:
        self._initial = initial

    def initial(self) -> int:
        return self._initial

    def prepare(self, op: Op) -> _CounterCall | None:
        return self._prepare(op, False)

    def prepare_all(self, ops: Sequence[Op]) -> list[_CounterCall | None]:
        calls = [self._prepare(op, False) for op in ops]
        # With no negative increments the count only grows, which makes HOPELESS sound.
        if all(call is None or not call[0] or call[1] >= 0 for call in calls):
            calls = [None if call is None else (*call[:3], True) for call in calls]
        return calls

    def _prepare(self, op: Op, forward: bool) -> _CounterCall | None:
        ok = op.outcome == "ok"
        if op.f == "read":
            return (False, _count(op.result, op), None, forward) if ok else None
        if op.f == "incr":
            delta = 1 if op.value is None else _count(op.value, op)
            after = None if not ok or op.result is None else _count(op.result, op)
            return (True, delta, after, forward)
        raise ValueError(f"CounterModel has no op {op.f!r}: {op!r}")

    def step(self, state: int, call: _CounterCall) -> int | Illegal:
        is_incr, n, after, forward = call
        if is_incr:
            new = state + n
            if after is None or after == new:
                return new
            return HOPELESS if forward and new > after else ILLEGAL
        if state == n:
            return state
        return HOPELESS if forward and state > n else ILLEGAL

    def read_only(self, call: _CounterCall) -> bool:
        return not call[0]


class _Unread:
    """The placeholder for every written value that no read returned."""

    def __repr__(self) -> str:
        return "<a value no read returned>"


_UNREAD: Final = _Unread()


def _says(result: Any, flag: str) -> bool:
    return isinstance(result, dict) and result.get(flag) is True


def _freeze(value: Any) -> Hashable:
    """A hashable, comparable stand-in for a JSON value (states must be hashable)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Hashable):
        return value
    raise ValueError(f"not a JSON value: {value!r}")


def _field(data: Any, name: str, op: Op) -> Any:
    if not isinstance(data, dict) or name not in data:
        raise ValueError(f"{op.f} needs {name!r} in {data!r}: {op!r}")
    return data[name]


def _int(data: Any, name: str, op: Op) -> int:
    found = _field(data, name, op)
    if not isinstance(found, int) or isinstance(found, bool):
        raise ValueError(f"{op.f}: {name!r} must be an int in {data!r}: {op!r}")
    return found


def _count(data: Any, op: Op) -> int:
    if isinstance(data, dict):
        return _int(data, "value", op)
    if not isinstance(data, int) or isinstance(data, bool):
        raise ValueError(f"{op.f}: expected an int or {{'value': n}}, got {data!r}: {op!r}")
    return data

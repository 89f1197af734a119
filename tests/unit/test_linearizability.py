"""The linearizability checker: known-good and known-bad histories, and random ones from a simulation."""

from __future__ import annotations

import itertools
import math
import random
import time
from typing import Any

import pytest

from tests.chaos.framework._history import Op, Outcome
from tests.chaos.framework._linearizability import HOPELESS, ILLEGAL, Model, check, check_all, overall
from tests.chaos.framework._models import CounterModel, RegisterModel

INITIAL = (1, "0")


def _op(
    process: int,
    f: str,
    value: Any,
    start: float,
    end: float,
    result: Any = None,
    outcome: Outcome = "ok",
    key: str = "k",
) -> Op:
    return Op(process, key, f, value, start, end, outcome, result, None if outcome == "ok" else "boom")


def _read(process: int, start: float, end: float, version: int, value: str, key: str = "k") -> Op:
    return _op(process, "read", None, start, end, {"version": version, "value": value}, key=key)


def _cas(
    process: int, start: float, end: float, expected: int, new: str, result: Any = None, **kw: Any
) -> Op:
    if result is None and kw.get("outcome", "ok") == "ok":
        result = {"version": expected + 1}
    return _op(process, "cas", {"expected": expected, "new": new}, start, end, result, **kw)


def _register(ops: list[Op], **kw: Any) -> bool | None:
    return check(ops, RegisterModel(initial=INITIAL), **kw).valid


# --- Hand-written histories -----------------------------------------------------------------------


def test_check_sequential_register_history_is_valid() -> None:
    ops = [
        _read(0, 0, 1, 1, "0"),
        _cas(1, 2, 3, 1, "a"),
        _read(0, 4, 5, 2, "a"),
        _op(1, "write", "b", 6, 7, {"version": 3}),
        _read(2, 8, 9, 3, "b"),
        _op(0, "delete", None, 10, 11),
        _op(1, "read", None, 12, 13, {"missing": True}),
        _op(2, "create", "c", 14, 15, {"version": 1}),
        _read(0, 16, 17, 1, "c"),
    ]

    assert _register(ops) is True


def test_check_empty_history_is_valid() -> None:
    assert _register([]) is True


def test_check_stale_read_after_completed_write_is_invalid_and_names_the_read() -> None:
    ops = [_cas(0, 0, 1, 1, "new"), _read(1, 2, 3, 1, "0")]

    result = check(ops, RegisterModel(initial=INITIAL))

    assert result.valid is False
    assert result.counterexample is not None
    assert "p1 read" in result.counterexample.splitlines()[0]
    assert "model state when it had to take effect: version 2" in result.counterexample
    assert "p0 cas" in result.counterexample  # the write it should have seen


def test_check_read_overlapping_write_may_see_either_value() -> None:
    write = _cas(0, 0, 10, 1, "new")

    assert _register([write, _read(1, 2, 3, 1, "0")]) is True
    assert _register([write, _read(1, 2, 3, 2, "new")]) is True


def test_check_reads_overlapping_write_cannot_go_back_in_time() -> None:
    # Both reads overlap the write, but the second starts after the first saw the new value.
    ops = [_cas(0, 0, 10, 1, "new"), _read(1, 1, 2, 2, "new"), _read(2, 3, 4, 1, "0")]

    assert _register(ops) is False


def test_check_cas_conflict_legal_only_when_version_differs() -> None:
    conflict = {"conflict": True}

    assert _register([_cas(0, 0, 1, 1, "a"), _cas(1, 2, 3, 1, "b", conflict)]) is True
    assert _register([_cas(1, 0, 1, 1, "b", conflict)]) is False


def test_check_concurrent_cas_with_same_expected_only_one_wins() -> None:
    both_won = [_cas(0, 0, 5, 1, "a"), _cas(1, 0, 5, 1, "b")]
    one_won = [_cas(0, 0, 5, 1, "a"), _cas(1, 0, 5, 1, "b", {"conflict": True})]

    assert _register(both_won) is False
    assert _register(one_won) is True


def test_check_cas_result_with_impossible_version_is_invalid() -> None:
    assert _register([_cas(0, 0, 1, 1, "a", {"version": 5})]) is False


def test_check_unknown_write_may_take_effect_later() -> None:
    # The write "failed" with an unknown outcome at t=1, but a read at t=5 sees it: legal.
    ops = [_cas(0, 0, 1, 1, "maybe", outcome="unknown"), _read(1, 5, 6, 2, "maybe")]

    assert _register(ops) is True


def test_check_unknown_write_may_never_take_effect() -> None:
    ops = [_cas(0, 0, 1, 1, "maybe", outcome="unknown"), _read(1, 5, 6, 1, "0")]

    assert _register(ops) is True


def test_check_unknown_write_seen_twice_is_invalid() -> None:
    # One unknown cas can take effect at most once: the value cannot come back after "b".
    ops = [
        _cas(0, 0, 1, 1, "maybe", outcome="unknown"),
        _read(1, 2, 3, 2, "maybe"),
        _op(1, "write", "b", 4, 5, {"version": 3}),
        _read(1, 6, 7, 4, "maybe"),
    ]

    assert _register(ops) is False


def test_check_unknown_write_cannot_take_effect_before_it_started() -> None:
    ops = [_read(1, 0, 1, 2, "early"), _cas(0, 2, 3, 1, "early", outcome="unknown")]

    assert _register(ops) is False


def test_check_version_going_back_is_invalid_without_delete() -> None:
    ops = [_cas(0, 0, 1, 1, "a"), _cas(0, 2, 3, 2, "b"), _read(1, 4, 5, 2, "a")]

    result = check(ops, RegisterModel(initial=INITIAL))

    assert result.valid is False
    assert result.counterexample is not None
    assert "p1 read" in result.counterexample.splitlines()[0]


def test_check_version_restarts_after_delete_and_create() -> None:
    ops = [
        _op(0, "create", "a", 0, 1, {"version": 1}),
        _cas(0, 2, 3, 1, "b"),
        _op(1, "delete", None, 4, 5),
        _op(1, "create", "c", 6, 7, {"version": 1}),
        _read(2, 8, 9, 1, "c"),
        _op(2, "cas", {"expected": 1, "new": "x"}, 10, 11, {"missing": True}),  # not legal: it exists
    ]

    assert check(ops[:5], RegisterModel()).valid is True
    assert check(ops, RegisterModel()).valid is False


def test_check_failed_write_is_dropped() -> None:
    failed = _cas(0, 0, 1, 1, "lost", outcome="fail")

    assert _register([failed, _read(1, 2, 3, 1, "0")]) is True
    assert _register([failed, _read(1, 2, 3, 2, "lost")]) is False


def test_check_read_of_missing_object_needs_missing_state() -> None:
    missing = _op(0, "read", None, 0, 1, {"missing": True})

    assert check([missing], RegisterModel()).valid is True
    assert _register([missing]) is False


def test_check_counter_double_increment_is_invalid() -> None:
    ops = [
        _op(0, "incr", 1, 0, 1),
        _op(1, "incr", 1, 0.5, 1.5, outcome="unknown"),
        _op(2, "read", None, 2, 3, 2),
        _op(2, "read", None, 4, 5, 3),  # more than 1 ok + 1 unknown increments
    ]

    result = check(ops, CounterModel())

    assert check(ops[:3], CounterModel()).valid is True
    assert result.valid is False
    assert result.counterexample is not None
    assert "read(None) -> 3" in result.counterexample


def test_check_counter_incr_result_must_match_new_value() -> None:
    ops = [_op(0, "incr", 1, 0, 1, 1), _op(1, "incr", 1, 2, 3, 3)]

    assert check(ops, CounterModel()).valid is False
    assert check(ops, CounterModel(initial=1)).valid is False
    assert check(ops[:1], CounterModel()).valid is True


def test_check_all_partitions_by_key() -> None:
    ops = [
        _cas(0, 0, 1, 1, "a", key="x"),
        _read(1, 2, 3, 1, "0", key="y"),  # fine: y was never written
        _read(1, 4, 5, 1, "0", key="x"),  # stale
    ]

    results = check_all(ops, lambda key: RegisterModel(initial=INITIAL))

    assert {k: r.valid for k, r in results.items()} == {"x": False, "y": True}
    assert overall(results) is False
    with pytest.raises(ValueError, match="one key"):
        check(ops, RegisterModel(initial=INITIAL))


def test_check_malformed_result_raises() -> None:
    with pytest.raises(ValueError, match="version"):
        check([_op(0, "read", None, 0, 1, {"value": "x"})], RegisterModel(initial=INITIAL))


def _exploding_counter_history(k: int) -> list[Op]:
    """Unknown increments of 1, 2, 4, ...: every subset sums differently, and the final read
    (one more than all of them) is impossible, so the search has to try all 2^k subsets."""
    ops = [_op(p, "incr", 1 << p, 0, 1, outcome="unknown") for p in range(k)]
    return [*ops, _op(k, "read", None, 2, 3, 1 << k)]


def test_check_budget_exhausted_by_steps_returns_none() -> None:
    result = check(_exploding_counter_history(30), CounterModel(), max_explored=10_000)

    assert result.valid is None
    assert result.explored == 10_001
    assert result.counterexample is not None
    assert "budget exhausted" in result.counterexample
    assert overall({"k": result}) is None


def test_check_budget_exhausted_by_time_returns_none() -> None:
    result = check(_exploding_counter_history(30), CounterModel(), budget_s=0.2)

    assert result.valid is None
    assert result.elapsed_s < 5


def test_check_small_exploding_history_is_decided_invalid() -> None:
    assert check(_exploding_counter_history(8), CounterModel()).valid is False


# --- Tiny random histories against a brute-force checker ------------------------------------------


def _brute_force(ops: list[Op], model: Model[Any, Any]) -> bool:
    """Try every subset of unknown ops and every order that respects real time."""
    kept = [op for op in ops if op.outcome != "fail"]
    items = [(op, call) for op, call in zip(kept, [model.prepare(op) for op in kept], strict=True) if call]
    ok = [i for i, (op, _) in enumerate(items) if op.outcome == "ok"]
    unknown = [i for i, (op, _) in enumerate(items) if op.outcome == "unknown"]

    def end(i: int) -> float:
        return items[i][0].end_s if items[i][0].outcome == "ok" else math.inf

    for size in range(len(unknown) + 1):
        for subset in itertools.combinations(unknown, size):
            for order in itertools.permutations(ok + list(subset)):
                at = {i: k for k, i in enumerate(order)}
                if any(end(a) < items[b][0].start_s and at[a] > at[b] for a in order for b in order):
                    continue
                state: Any = model.initial()
                for i in order:
                    state = model.step(state, items[i][1])
                    if state is ILLEGAL or state is HOPELESS:
                        break
                else:
                    return True
    return False


def _tiny_random_history(rng: random.Random, counter: bool) -> list[Op]:
    ops = []
    for process in range(rng.randint(1, 6)):
        start = rng.randint(0, 6)
        end = start + rng.randint(0, 4)
        outcome: Outcome = rng.choice(["ok", "ok", "ok", "unknown", "fail"])
        value: Any = None
        result: Any = None
        if counter:
            f = rng.choice(["incr", "read"])
            if f == "incr":
                value, result = rng.choice([1, 1, 2]), rng.choice([None, None, 1, 2, 3])
            else:
                result = rng.randint(0, 4)
        else:
            f = rng.choice(["read", "read", "cas", "write", "delete", "create"])
            new = rng.choice(["a", "b", "0"])
            if f == "read":
                result = (
                    {"missing": True} if rng.random() < 0.15 else {"version": rng.randint(1, 3), "value": new}
                )
            elif f == "cas":
                value = {"expected": rng.randint(1, 3), "new": new}
                result = rng.choice(
                    [{"version": value["expected"] + 1}, {"conflict": True}, {"missing": True}]
                )
            elif f == "write":
                value, result = new, rng.choice([{"version": rng.randint(2, 4)}, {"missing": True}])
            elif f == "delete":
                result = rng.choice([None, {"missing": True}])
            else:
                value, result = new, rng.choice([{"version": 1}, {"exists": True}])
        ops.append(_op(process, f, value, start, end, result if outcome == "ok" else None, outcome))
    return ops


@pytest.mark.parametrize("counter", [False, True], ids=["register", "counter"])
def test_check_agrees_with_brute_force_on_tiny_histories(counter: bool) -> None:
    verdicts = []
    for seed in range(1500):
        rng = random.Random(seed)
        ops = _tiny_random_history(rng, counter)
        model = CounterModel() if counter else RegisterModel(initial=INITIAL if seed % 2 else None)

        verdict = check(ops, model).valid
        verdicts.append(verdict)

        assert verdict == _brute_force(ops, model), ops
    assert verdicts.count(True) > 100
    assert verdicts.count(False) > 100


# --- Random histories from a simulated register ---------------------------------------------------


def _random_register_history(
    rng: random.Random, n_ops: int, processes: int, *, unknown_rate: float = 0.0
) -> list[Op]:
    """Ops of `processes` sequential clients on one real register, each op taking effect at a
    random instant of its interval (an unknown one: later, or never): linearizable by construction."""
    clocks = [rng.uniform(0, 0.01) for _ in range(processes)]
    plans: list[tuple[float, int, float, float, str, bool]] = []
    for _ in range(n_ops):
        process = rng.randrange(processes)
        start = clocks[process] + rng.expovariate(1000)
        end = start + rng.uniform(0.0005, 0.02)
        clocks[process] = end
        f = rng.choice(["read", "read", "cas", "write"])
        unknown = f != "read" and rng.random() < unknown_rate
        if unknown:
            # Applied later than the client gave up on it, or never.
            at = rng.uniform(start, end + 0.05) if rng.random() < 0.5 else math.inf
        else:
            at = rng.uniform(start, end)
        plans.append((at, process, start, end, f, unknown))
    version, value = INITIAL
    ops: list[Op] = []
    for at, process, start, end, f, unknown in sorted(plans):
        outcome: Outcome = "unknown" if unknown else "ok"
        if f == "read":
            ops.append(_read(process, start, end, version, value))
        elif at == math.inf:
            args = {"expected": version, "new": "never"} if f == "cas" else "never"
            ops.append(_op(process, f, args, start, end, None, outcome))
        elif f == "write":
            new = f"w{len(ops)}"
            version, value = version + 1, new
            ops.append(_op(process, "write", new, start, end, {"version": version}, outcome))
        else:
            expected = version if rng.random() < 0.7 else version - 1
            new = f"c{len(ops)}"
            if expected == version:
                version, value = version + 1, new
                result: Any = {"version": version}
            else:
                result = {"conflict": True}
            ops.append(_cas(process, start, end, expected, new, result, outcome=outcome))
    return [_forget_result(op) if op.outcome == "unknown" else op for op in ops]


def _forget_result(op: Op) -> Op:
    return Op(op.process, op.key, op.f, op.value, op.start_s, op.end_s, "unknown", None, "timeout")


def _corrupt_one_read(rng: random.Random, ops: list[Op], back: int = 3) -> list[Op]:
    """Make one read return the state `back` versions older than it saw (a stale read)."""
    values = {1: "0"}
    for op in ops:
        if op.outcome == "ok" and op.f in ("cas", "write") and "version" in op.result:
            values[op.result["version"]] = op.value if op.f == "write" else op.value["new"]
    reads = [i for i, op in enumerate(ops) if op.f == "read" and op.result["version"] > back]
    i = rng.choice(reads)
    stale = ops[i].result["version"] - back
    corrupted = list(ops)
    corrupted[i] = _read(
        ops[i].process, ops[i].start_s, ops[i].end_s, stale, values.get(stale, "never written")
    )
    return corrupted


@pytest.mark.parametrize("seed", range(30))
def test_check_random_linearizable_history_is_valid(seed: int) -> None:
    rng = random.Random(seed)
    ops = _random_register_history(rng, 300, rng.randint(2, 8), unknown_rate=0.1)

    result = check(ops, RegisterModel(initial=INITIAL))

    assert result.valid is True, result.counterexample


def test_check_random_history_with_one_stale_read_is_mostly_invalid() -> None:
    # Not always: a read that overlaps the writes it missed may legally miss them.
    verdicts = []
    for seed in range(40):
        rng = random.Random(seed)
        ops = _random_register_history(rng, 200, rng.randint(2, 6), unknown_rate=0.05)
        corrupted = _corrupt_one_read(rng, ops)
        verdicts.append(check(corrupted, RegisterModel(initial=INITIAL)).valid)

    assert None not in verdicts
    assert verdicts.count(False) >= 32, verdicts


@pytest.mark.parametrize("processes", [10, 20])
def test_check_5000_ops_many_processes_within_seconds(processes: int) -> None:
    ops = _random_register_history(random.Random(2024), 5000, processes, unknown_rate=0.02)

    started = time.perf_counter()
    result = check(ops, RegisterModel(initial=INITIAL))
    elapsed = time.perf_counter() - started

    print(f"\n{result.ops} ops, {processes} processes, one key: {elapsed:.2f} s, {result.explored} steps")
    assert result.valid is True, result.counterexample
    assert elapsed < 60

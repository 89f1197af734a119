"""Recording a chaos run: ops with honest outcomes, from many threads, and back from JSON."""

from __future__ import annotations

import itertools
import json
import threading

import pytest

from tests.chaos.framework._history import FaultWindow, History, Op


class _Timeout(Exception):
    pass


def test_invoke_ok_records_interval_and_result() -> None:
    history = History()

    call = history.invoke(3, "r0", "cas", {"expected": 1, "new": "x"})
    op = call.ok({"version": 2})

    assert history.ops() == [op]
    assert (op.process, op.key, op.f, op.value) == (3, "r0", "cas", {"expected": 1, "new": "x"})
    assert (op.outcome, op.result, op.error) == ("ok", {"version": 2}, None)
    assert 0 <= op.start_s <= op.end_s <= history.now()


def test_invoke_fail_and_unknown_record_the_error_without_result() -> None:
    history = History()

    failed = history.invoke(0, "k", "write", "a").fail(ConnectionError("no leader"))
    unknown = history.invoke(1, "k", "write", "b").unknown(_Timeout("deadline exceeded"))
    described = history.invoke(2, "k", "incr", 1).unknown("gave up")

    assert (failed.outcome, failed.result, failed.error) == ("fail", None, "ConnectionError: no leader")
    assert (unknown.outcome, unknown.error) == ("unknown", "_Timeout: deadline exceeded")
    assert described.error == "gave up"


def test_invoke_finished_twice_raises() -> None:
    call = History().invoke(0, "k", "read")
    call.ok({"missing": True})

    with pytest.raises(RuntimeError, match="already recorded"):
        call.fail("late")


def test_record_end_before_start_raises() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        History().record(Op(0, "k", "read", None, 2.0, 1.0, "ok"))


def test_ops_sorted_by_start_whatever_the_recording_order() -> None:
    history = History()
    late = Op(0, "k", "read", None, 5.0, 6.0, "ok", 1)
    early = Op(1, "k", "incr", 1, 1.0, 9.0, "unknown", error="timeout")

    history.record(late)
    history.record(early)

    assert history.ops() == [early, late]
    assert len(history) == 2


def test_record_from_many_threads_keeps_every_op() -> None:
    history = History()

    def worker(process: int) -> None:
        for n in range(500):
            history.invoke(process, f"k{n % 3}", "incr", 1).ok(n)

    threads = [threading.Thread(target=worker, args=(p,)) for p in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    ops = history.ops()
    assert len(ops) == 8 * 500
    assert [op.start_s for op in ops] == sorted(op.start_s for op in ops)
    for p in range(8):
        mine = [op for op in ops if op.process == p]
        # One op in flight per worker: its ops never overlap.
        assert all(a.end_s <= b.start_s for a, b in itertools.pairwise(mine))


def test_history_json_round_trip_is_exact() -> None:
    history = History()
    history.invoke(0, "r0", "read").ok({"version": 1, "value": "0"})
    history.invoke(1, "r0", "cas", {"expected": 1, "new": "x"}).unknown("timeout")
    history.invoke(2, "c0", "incr", 1).fail("Unavailable: no quorum")

    data = json.loads(json.dumps(history.to_json()))
    again = History.from_json(data)

    assert again.ops() == history.ops()


def test_op_from_json_unknown_outcome_raises() -> None:
    data = Op(0, "k", "read", None, 0.0, 1.0, "ok").to_json() | {"outcome": "info"}

    with pytest.raises(ValueError, match="unknown outcome 'info'"):
        Op.from_json(data)


def test_fault_window_json_round_trip_keeps_open_end() -> None:
    windows = [FaultWindow("partition", 1.5, 4.0, "n1 | n2 n3"), FaultWindow("skew", 7.0, None)]

    again = [FaultWindow.from_json(json.loads(json.dumps(w.to_json()))) for w in windows]

    assert again == windows


def test_now_starts_near_zero_and_never_goes_back() -> None:
    history = History()
    readings = [history.now() for _ in range(1000)]

    assert 0 <= readings[0] < 1
    assert readings == sorted(readings)

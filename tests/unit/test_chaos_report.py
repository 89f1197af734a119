"""A chaos run's report: JSON that round-trips, recovery times, and a timeline PNG."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from tests.chaos.framework._history import FaultWindow, History, Op
from tests.chaos.framework._linearizability import check_all
from tests.chaos.framework._models import RegisterModel
from tests.chaos.framework._report import (
    WriteGap,
    count_ops,
    longest_write_gap,
    plot_timeline,
    read_report,
    recovery_times,
    summarise,
    write_report,
)

FAULTS = [FaultWindow("partition n1", 2.0, 4.0, "n1 | n2 n3"), FaultWindow("kill leader", 6.0, None)]


def _history() -> list[Op]:
    return [
        Op(0, "r0", "read", None, 0.0, 0.1, "ok", {"version": 1, "value": "0"}),
        Op(1, "r0", "cas", {"expected": 1, "new": "a"}, 0.2, 0.3, "ok", {"version": 2}),
        Op(2, "r0", "cas", {"expected": 1, "new": "b"}, 0.2, 0.4, "ok", {"conflict": True}),
        Op(0, "r0", "cas", {"expected": 2, "new": "c"}, 2.1, 3.1, "unknown", error="OutcomeUnknown: timeout"),
        Op(1, "c0", "incr", 1, 2.2, 3.2, "fail", error="Unavailable: no leader"),
        Op(2, "r0", "read", None, 4.2, 4.3, "ok", {"version": 3, "value": "c"}),
        Op(0, "c0", "incr", 1, 4.5, 4.9, "ok", 1),
    ]


def test_write_report_round_trips_through_json(tmp_path: Path) -> None:
    ops = _history()
    checks = {
        "register": {"anomalies": [], "results": check_all(ops[:4] + ops[5:6], RegisterModel((1, "0")))}
    }

    written = write_report(
        tmp_path / "out" / "run.json",
        scenario="partition",
        seed=7,
        history=ops,
        faults=FAULTS,
        checks=checks,
        extra={"settle_s": math.inf, "nodes": ("n1", "n2"), "data": tmp_path},
    )
    report = read_report(tmp_path / "out" / "run.json")

    assert report == written | {
        "checks": report["checks"],
        "extra": report["extra"],
        "recovery": report["recovery"],
    }
    assert (report["scenario"], report["seed"], report["duration_s"]) == ("partition", 7, 4.9)
    assert History.from_json(report["ops"]).ops() == sorted(ops, key=lambda op: op.start_s)
    assert [FaultWindow.from_json(f) for f in report["faults"]] == FAULTS
    assert report["checks"]["register"]["results"]["r0"]["valid"] is True
    assert report["extra"] == {"settle_s": None, "nodes": ["n1", "n2"], "data": str(tmp_path)}
    assert not list((tmp_path / "out").glob("*.partial"))


def test_write_report_counts_ops_by_function_and_outcome(tmp_path: Path) -> None:
    report = write_report(
        tmp_path / "run.json", scenario="s", seed=1, history=_history(), faults=[], checks={}, extra={}
    )

    assert report["counts"] == {
        "total": 7,
        "by_outcome": {"ok": 5, "fail": 1, "unknown": 1},
        "by_f": {
            "cas": {"ok": 2, "fail": 0, "unknown": 1},
            "incr": {"ok": 1, "fail": 1, "unknown": 0},
            "read": {"ok": 2, "fail": 0, "unknown": 0},
        },
    }
    assert report["unknown"] == 1


def test_write_report_measures_recovery_from_heals_by_default(tmp_path: Path) -> None:
    history = History()
    for op in _history():
        history.record(op)

    report = write_report(
        tmp_path / "run.json", scenario="s", seed=1, history=history, faults=FAULTS, checks={}, extra={}
    )
    explicit = write_report(
        tmp_path / "run2.json",
        scenario="s",
        seed=1,
        history=history,
        faults=FAULTS,
        checks={},
        extra={},
        recovery_events=[2.0, 6.0],
    )

    # Only the partition healed (at 4.0); the first ok write starting after it ends at 4.9.
    assert report["recovery"]["events_s"] == [4.0]
    assert report["recovery"]["delays_s"] == [pytest.approx(0.9)]
    # From 2.0: the unknown cas and the failed incr do not count; from 6.0 nothing recovered.
    assert explicit["recovery"]["delays_s"] == [pytest.approx(2.9), None]
    assert explicit["recovery"]["summary"] == {
        "n": 2,
        "p50": pytest.approx(2.9),
        "max": pytest.approx(2.9),
        "unrecovered": 1,
    }


def test_read_report_other_format_raises(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text('{"format": 0}')

    with pytest.raises(ValueError, match="format 0"):
        read_report(path)


def test_recovery_times_first_ok_write_starting_after_each_event() -> None:
    ops = [
        Op(0, "k", "cas", None, 9.0, 12.0, "ok"),  # started before the event: says nothing
        Op(1, "k", "read", None, 10.1, 10.2, "ok"),  # not a write
        Op(2, "k", "write", None, 10.2, 10.3, "fail"),  # failed
        Op(3, "k", "write", None, 10.5, 11.5, "ok"),
        Op(4, "k", "delete", None, 10.6, 11.0, "ok"),  # started later, but ended first
        Op(5, "k", "incr", None, 20.0, 20.25, "ok"),
    ]

    delays = recovery_times(ops, [10.0, 15.0, 20.0, 30.0])

    assert delays == [pytest.approx(1.0), pytest.approx(5.25), pytest.approx(0.25), math.inf]


def test_longest_write_gap_stall_after_the_heal_counted() -> None:
    # Heal at 10.0; writes stall from 10.2 to 13.7 (a healed node deposed the leader). A
    # recovery figure measured from the heal would see the first write after it, 10.0-10.2.
    ops = [
        Op(0, "k", "write", None, 9.0, 9.5, "ok"),
        Op(1, "k", "write", None, 10.0, 10.2, "ok"),
        Op(2, "k", "read", None, 10.3, 10.4, "ok"),  # a read acknowledges no write
        Op(3, "k", "cas", None, 10.3, 13.0, "unknown"),  # nor does an unknown outcome
        Op(4, "k", "incr", None, 10.4, 12.0, "fail"),
        Op(5, "k", "create", None, 12.1, 13.7, "ok"),
        Op(0, "k", "delete", None, 13.8, 14.0, "ok"),
    ]

    gap = longest_write_gap(ops)

    assert gap == WriteGap(pytest.approx(3.5), 10.2, 13.7)


def test_longest_write_gap_run_ending_in_a_stall_counts_to_the_last_attempt() -> None:
    ops = [
        Op(0, "k", "write", None, 1.0, 1.1, "ok"),
        Op(1, "k", "write", None, 1.2, 6.1, "fail"),
        Op(2, "k", "read", None, 1.2, 9.0, "ok"),  # readers do not extend the window
    ]

    assert longest_write_gap(ops) == WriteGap(pytest.approx(5.0), 1.1, 6.1)


def test_longest_write_gap_wait_for_the_first_ack_counted_and_no_writes_none() -> None:
    assert longest_write_gap([Op(0, "k", "cas", None, 2.0, 4.5, "ok")]) == WriteGap(2.5, 2.0, 4.5)
    assert longest_write_gap([Op(0, "k", "read", None, 0.0, 1.0, "ok")]) is None
    assert longest_write_gap([]) is None


def test_write_report_holds_the_longest_write_gap(tmp_path: Path) -> None:
    report = write_report(
        tmp_path / "run.json", scenario="s", seed=1, history=_history(), faults=FAULTS, checks={}, extra={}
    )

    # Acks at 0.3, 0.4 and 4.9 (writes ran from 0.2 to 4.9): the stall spans the partition.
    assert report["write_gap"] == {"length_s": pytest.approx(4.5), "start_s": 0.4, "end_s": 4.9}


def test_summarise_reports_median_max_and_unrecovered() -> None:
    assert summarise([0.5, 0.1, 0.3, math.inf]) == {"n": 4, "p50": 0.3, "max": 0.5, "unrecovered": 1}
    assert summarise([]) == {"n": 0, "p50": None, "max": None, "unrecovered": 0}


def test_count_ops_empty_history() -> None:
    assert count_ops(History()) == {"total": 0, "by_outcome": {"ok": 0, "fail": 0, "unknown": 0}, "by_f": {}}


def test_plot_timeline_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "timeline.png"

    plot_timeline(path, _history(), FAULTS, "partition (seed 7)")

    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_plot_timeline_empty_history_still_draws(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "empty.png"

    plot_timeline(path, [], [], "nothing happened")

    assert path.stat().st_size > 0


def test_plot_timeline_without_matplotlib_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` fail

    with pytest.raises(RuntimeError, match="matplotlib"):
        plot_timeline(tmp_path / "t.png", _history(), [], "t")

"""The soak's verdicts can fail: each is fed a recording that must fail it, and one that must pass."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.framework import FaultWindow, Op

from .observe import NodeSample, Sample, raft_files
from .verdicts import (
    compaction_intervals,
    explained,
    flat,
    p99_during_compactions,
    percentile,
    term_changes,
)


def node(pid: int = 1, raft_bytes: int = 1000, **kw: object) -> NodeSample:
    base: dict[str, object] = {"rss_bytes": 50_000_000, "snapshot_files": "a", "answered": True, "term": 1}
    base.update(kw)
    return NodeSample(pid=pid, raft_bytes=raft_bytes, **base)  # type: ignore[arg-type]


def run(values: list[NodeSample]) -> list[Sample]:
    return [Sample(float(t), {"n1": v}) for t, v in enumerate(values)]


def op(start: float, latency_s: float) -> Op:
    return Op(1, "k", "read", None, start, start + latency_s, "ok", {"version": 1, "value": "0"})


def test_flat_fails_when_the_last_windows_peak_is_over_1_2_times_the_first() -> None:
    growing = run([node(raft_bytes=1000 * (t + 1)) for t in range(100)])
    verdict = flat(growing, "n1", "raft_bytes", (10, 40), (70, 100))
    assert verdict["ok"] is False and verdict["ratio"] > 2


def test_flat_passes_when_the_peak_stays_within_1_2_times() -> None:
    steady = run([node(raft_bytes=1000 + (t % 10) * 10) for t in range(100)])
    assert flat(steady, "n1", "raft_bytes", (10, 40), (70, 100))["ok"] is True


def test_flat_is_not_judged_without_samples_in_a_window() -> None:
    assert flat(run([node()] * 5), "n1", "raft_bytes", (10, 40), (70, 100))["ok"] is None


def test_a_rewritten_snapshot_file_counts_as_a_compaction_without_status_fields() -> None:
    samples = run([node(snapshot_files="a"), node(snapshot_files="b"), node(snapshot_files="b")])
    assert compaction_intervals(samples, "n1") == [(0.0, 1.0)]


def test_snapshots_taken_counts_every_snapshot_and_restarts_count_from_zero() -> None:
    samples = run(
        [
            node(snapshots_taken=1),
            node(snapshots_taken=3),
            node(pid=2, snapshots_taken=1),
            node(pid=2, snapshots_taken=1),
        ]
    )
    assert len(compaction_intervals(samples, "n1")) == 3  # +2, then 1 in the new process


def test_a_restart_alone_is_not_a_compaction() -> None:
    samples = run([node(pid=1, snapshot_files="a"), node(pid=2, snapshot_files="b", raft_bytes=10)])
    assert compaction_intervals(samples, "n1") == []


def test_a_term_change_outside_every_fault_and_its_grace_is_unexplained() -> None:
    samples = run([node(term=1)] * 10 + [node(term=2)] + [node(term=2)] * 40 + [node(term=3)])
    changes = term_changes(samples)
    assert [(c["from"], c["to"]) for c in changes] == [(1, 2), (2, 3)]
    faults = [FaultWindow("kill", 8.0, 9.0)]
    assert explained(changes[0], faults, grace_s=5.0)
    assert not explained(changes[1], faults, grace_s=5.0)


def test_p99_fails_when_ops_during_compactions_are_three_times_slower() -> None:
    ops = [op(t * 0.1, 0.030 if 50 <= t % 100 < 60 else 0.010) for t in range(2000)]
    compactions = [(k * 10.0 + 5.0, k * 10.0 + 5.9) for k in range(20)]
    verdict = p99_during_compactions(ops, compactions, [], grace_s=5.0)
    assert verdict["ok"] is False, verdict
    even = [op(t * 0.1, 0.010) for t in range(2000)]
    assert p99_during_compactions(even, compactions, [], grace_s=5.0)["ok"] is True


def test_percentile_is_nearest_rank() -> None:
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([], 99) is None


def test_raft_files_leave_out_the_log_the_pid_and_files_caught_mid_rename(tmp_path: Path) -> None:
    (tmp_path / "raft.journal").write_bytes(b"j" * 100)
    (tmp_path / "raft.dump").write_bytes(b"d" * 10)
    for transient in ("node.log", "node.pid", "raft.journal.meta.tmp", "raft.dump.tmp"):
        (tmp_path / transient).write_bytes(b"x" * 1000)
    size, marks = raft_files(tmp_path)
    assert size == 110
    (tmp_path / "raft.dump.tmp").replace(tmp_path / "raft.dump")
    assert raft_files(tmp_path)[1] != marks  # a rewritten snapshot changes the fingerprint

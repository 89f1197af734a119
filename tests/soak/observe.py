"""What the soak watches while it runs: one `Sample` of every node every `period_s`.

Per node: its pid and RSS (/proc/<pid>/status VmRSS; LocalCluster knows the pids), the
bytes of its Raft files (everything in its data dir but the log and pid file: journal,
meta, snapshot, whatever the journal in use writes), the identity of its snapshot files
(a rewrite shows a compaction even where nothing else does), and what `Status` says:
term, leadership, applied index, and the journal fields where this build reports them
(`journal_entries`, `snapshots_taken`, ...: read with getattr, so older builds work).

The sampler only observes, through its own ClusterView (its own channels), so it never
races the fault thread for LocalCluster's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sessionquorum.cluster import ClusterView

log = logging.getLogger(__name__)

NOT_RAFT_FILES = frozenset({"node.log", "node.pid"})
SNAPSHOT_MARKERS = ("dump", "snap")
# Status fields newer builds add; absent (or never non-zero) means "not reported".
OPTIONAL_FIELDS = ("journal_bytes", "journal_entries", "snapshots_taken", "snapshot_index", "clock_ahead_ms")


@dataclass(frozen=True, slots=True)
class NodeSample:
    pid: int | None
    rss_bytes: int | None
    raft_bytes: int
    snapshot_files: str  # a fingerprint of (name, inode, mtime) of the snapshot files
    answered: bool
    term: int | None = None
    is_leader: bool = False
    last_applied: int | None = None
    commit_index: int | None = None
    journal_bytes: int | None = None
    journal_entries: int | None = None
    snapshots_taken: int | None = None
    snapshot_index: int | None = None
    clock_ahead_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds on the History's clock
    nodes: Mapping[str, NodeSample]

    def term(self) -> int | None:
        terms = [n.term for n in self.nodes.values() if n.term is not None]
        return max(terms) if terms else None

    def leader(self) -> str | None:
        """The node claiming leadership in the highest term seen (None if none claims it)."""
        claims = [(n.term or 0, node) for node, n in self.nodes.items() if n.is_leader]
        return max(claims)[1] if claims else None

    def to_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "nodes": {k: asdict(v) for k, v in self.nodes.items()}}


def rss_bytes(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def raft_files(node_dir: Path) -> tuple[int, str]:
    """(total bytes of the Raft files, fingerprint of the snapshot files) in a node's dir."""
    total = 0
    marks: list[str] = []
    for root, _dirs, files in os.walk(node_dir):
        for name in files:
            # A .tmp file lives for a moment (pysyncobj rewrites its meta file through one at
            # every vote and term): counting it would make the sum flicker and fake compactions.
            if name in NOT_RAFT_FILES or name.endswith(".tmp"):
                continue
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:  # a temporary file renamed under our feet
                continue
            total += st.st_size
            if any(m in name for m in SNAPSHOT_MARKERS):
                marks.append(f"{name}:{st.st_ino}:{st.st_mtime_ns}")
    return total, hashlib.sha256("|".join(sorted(marks)).encode()).hexdigest()[:16]


def _optional(status: Any, name: str) -> int | None:
    value = getattr(status, name, None)
    return int(value) if value is not None else None


class Sampler:
    """A thread that samples every node until stopped (or until `max_s` has passed)."""

    def __init__(
        self,
        view: ClusterView,
        pid_of: Callable[[str], int | None],
        now: Callable[[], float],
        period_s: float,
        max_s: float,
    ) -> None:
        self._view = view
        self._pid_of = pid_of
        self._now = now
        self._period_s = period_s
        self._max_s = max_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._lock = threading.Lock()
        self._samples: list[Sample] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)
        self._view.close_channels()

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def latest(self) -> Sample | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def _run(self) -> None:
        started = self._now()
        while not self._stop.is_set() and self._now() - started < self._max_s:
            try:
                sample = self.take()
            except Exception:  # a broken sample must not end the soak's watch
                log.exception("sampling failed")
            else:
                with self._lock:
                    self._samples.append(sample)
            self._stop.wait(self._period_s)

    def take(self) -> Sample:
        t = self._now()
        statuses = self._view.statuses()
        nodes: dict[str, NodeSample] = {}
        for node_id in self._view.node_ids:
            pid = self._pid_of(node_id)
            size, marks = raft_files(self._view.node_dir(node_id))
            status = statuses.get(node_id)
            base = NodeSample(pid, rss_bytes(pid) if pid else None, size, marks, status is not None)
            if status is not None:
                base = NodeSample(
                    **{
                        **asdict(base),
                        "term": status.term,
                        "is_leader": status.is_leader,
                        "last_applied": status.last_applied,
                        "commit_index": status.commit_index,
                        **{name: _optional(status, name) for name in OPTIONAL_FIELDS},
                    }
                )
            nodes[node_id] = base
        return Sample(t, nodes)

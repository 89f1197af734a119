"""The proposer's clock: wall time, bounded by what the cluster's time line allows.

Replicated time is the `now_ms` the leader stamps into each command, clamped monotonic by
apply. If the leader's wall clock were trusted as it is, one leader running an hour ahead
would move the cluster's time forward by an hour for good: every session due within that
hour would expire on every node, the exactly-once table would empty, and later leaders could
not undo it (measured: shared/reference/long-life-findings.md, H1).

So a stamp is bounded by real elapsed time. Every node watches the entries it applies: an
entry stamped R, applied when this node's monotonic clock read M, says the cluster's time
line runs at most R - M ahead of this node's monotonic clock (the stamp was made before it
was applied). The node keeps the largest such offset. When it leads, it freezes that
offset for the whole term (its own stamps must not raise the bound they are checked
against, or a fast clock would ratchet it up entry by entry) and stamps

    min(wall, monotonic + offset + drift_ms)

A wall clock beyond the bound is logged (once per episode) and reported by Status
(`clock_ahead_ms`). A slow wall clock needs no rule: apply never moves time backwards.

What this does not count: while no entry is applied anywhere (every node down), the
cluster's time stands still, and sessions age only once it runs again; a node that was
down alone catches up from its peers' entries. Rejected: the majority median of the
members' wall clocks (it would count downtime, but needs every node's clock carried in
Raft traffic, which pysyncobj's messages do not allow without a deeper patch).
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

# The offset before any entry was observed: no time line yet, so the wall clock stands.
_NO_OFFSET: int | None = None


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class ProposerClock:
    """Thread-safe: `observe` runs on the Raft tick thread, `stamp` on the event loop."""

    def __init__(self, drift_ms: int) -> None:
        self._drift_ms = drift_ms
        self._lock = threading.Lock()
        self._observed: int | None = _NO_OFFSET
        self._frozen: int | None = _NO_OFFSET
        self._frozen_term = -1
        self._replicated_ms = 0
        self._ahead_ms = 0

    def observe(self, replicated_ms: int) -> None:
        """An entry carrying time `replicated_ms` was applied here just now."""
        if replicated_ms <= 0:
            return  # the cluster's time is not set yet (entries before the first stamp)
        offset = replicated_ms - monotonic_ms()
        with self._lock:
            self._replicated_ms = max(self._replicated_ms, replicated_ms)
            if self._observed is None or offset > self._observed:
                self._observed = offset

    def stamp(self, term: int) -> int:
        """The time to stamp into a command proposed (or a read served) as leader of `term`."""
        wall = wall_ms()
        with self._lock:
            if term != self._frozen_term:
                self._frozen_term, self._frozen = term, self._observed
            if self._frozen is None:
                return wall
            bound = monotonic_ms() + self._frozen + self._drift_ms
            ahead = wall - bound
            if ahead > 0:
                if self._ahead_ms == 0:
                    log.warning(
                        "this node's wall clock is %d ms ahead of the cluster's time line (as observed "
                        "in applied entries, plus elapsed time and %d ms of drift): stamping the bound "
                        "instead (check NTP; after a restart the time line may lag by the restart)",
                        ahead,
                        self._drift_ms,
                    )
                self._ahead_ms = ahead
                return bound
            if self._ahead_ms:
                log.warning("this node's wall clock is back within the cluster's time line")
            self._ahead_ms = 0
            return wall

    @property
    def ahead_ms(self) -> int:
        """How far the wall clock was ahead of the bound at the last stamp (0: within it)."""
        return self._ahead_ms

    @property
    def replicated_ms(self) -> int:
        return self._replicated_ms

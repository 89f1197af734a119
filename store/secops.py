"""Session-security state (command level 5): tombstones, rotation grace, disabled principals.

Pure like the rest of the state machine (`state.py` calls in; nothing here reads a clock):
- A **tombstone** remembers the token hash of a session that ended (deleted, revoked,
  evicted, expired idle, disabled, rotated away) until that session's old absolute
  deadline: a Create or a Rotate onto that hash is refused until then, so a hash that was
  once a credential never names a second session within the first one's lifetime.
- A rotated-away hash keeps serving its successor for `rotation_grace_ms` (in-flight
  requests of the same browser); a use after that is a **reuse**, reported once per
  tombstone and, with `revoke_on_reuse`, ending the session it was rotated into (OAuth 2.0
  refresh-token rotation, RFC 9700 4.14.2).
- **Disabled principals** get no new session until enabled.

Bounded: tombstones by `max_tombstones` (oldest first: insertion order, which is log order,
so every replica evicts the same one) and by their deadlines (the Expire sweep removes them);
disabled principals by `max_disabled_principals` (refused beyond it: evicting one would
silently re-enable it).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from .config import TIMEOUT_PROFILES

# Most rotations followed from a rotated-away hash to its live session (rotations within
# one grace window chain; more than this many is not a browser's in-flight requests).
MAX_CHAIN = 8


class Ended(StrEnum):
    """Why a session left the state: the named places lifecycle events hook."""

    DELETED = "deleted"
    REVOKED = "revoked"
    EVICTED = "evicted"
    EXPIRED_IDLE = "expired_idle"
    EXPIRED_ABSOLUTE = "expired_absolute"
    ROTATED = "rotated"  # the token hash left; the session lives on under the new one
    DISABLED = "disabled"  # its principal was disabled
    REUSE = "reuse"  # its rotated-away token was used after the grace (revoke_on_reuse)


# Ended(value) costs an Enum call (about 10x a dict lookup): restore reads many.
_ENDED_BY_VALUE = {e.value: e for e in Ended}


@dataclass(frozen=True, slots=True)
class Tombstone:
    # The ended session's absolute deadline: the hash is refused until then.
    deadline_ms: int
    handle: str
    reason: Ended
    # ROTATED only: the hash it was rotated into, and until when a use of the old one is
    # taken for a request that was in flight (not a reuse); with `serves` (a rotation asked
    # for a grace) the old token also serves its successor until then.
    successor: bytes | None = None
    grace_until_ms: int = 0
    serves: bool = False
    # A reuse of this hash was recorded (once per tombstone: a replayed stolen token costs
    # one log entry, not one per attempt).
    reported: bool = False


def clamp_timeouts(profile: str, idle_ms: int, absolute_ms: int) -> tuple[int, int]:
    """The timeouts a session gets under a timeout profile: at most the profile's."""
    caps = TIMEOUT_PROFILES[profile]
    if caps is None:
        return idle_ms, absolute_ms
    return min(idle_ms, caps[0]), min(absolute_ms, caps[1])


@dataclass(frozen=True, slots=True)
class SecCapture:
    tombstones: list[tuple[bytes, Tombstone]]  # insertion order: the eviction order
    disabled: dict[str, int]

    def disabled_rows(self) -> list[list[Any]]:
        return sorted([p, at] for p, at in self.disabled.items())


def tombstone_row(key: bytes, t: Tombstone) -> list[Any]:
    return [key, t.deadline_ms, t.handle, t.reason.value, t.successor, t.grace_until_ms, t.serves, t.reported]


class SecurityState:
    def __init__(self) -> None:
        # False until the first level-5 entry applies: before it, removals leave no
        # tombstone, as older releases apply the same entries.
        self.active = False
        self.tombstones: OrderedDict[bytes, Tombstone] = OrderedDict()
        # (deadline_ms, token_hash); may hold stale entries (an evicted tombstone).
        self._heap: list[tuple[int, bytes]] = []
        # principal -> replicated time it was disabled.
        self.disabled: dict[str, int] = {}
        self.tombstones_evicted = 0  # local tally for metrics, never replicated

    # ------------------------------------------------------------ tombstones
    def bury(self, token_hash: bytes, tomb: Tombstone, cap: int, now_ms: int) -> None:
        """Remember an ended session's hash; the oldest tombstone goes when at `cap`."""
        if not self.active or tomb.deadline_ms <= now_ms:
            return  # its lifetime is over: nothing left to protect
        self.tombstones.pop(token_hash, None)
        while len(self.tombstones) >= cap:
            self.tombstones.popitem(last=False)
            self.tombstones_evicted += 1
        self.tombstones[token_hash] = tomb
        heapq.heappush(self._heap, (tomb.deadline_ms, token_hash))

    def refuses(self, token_hash: bytes, now_ms: int) -> Tombstone | None:
        """The tombstone that forbids reusing `token_hash` now, if any."""
        tomb = self.tombstones.get(token_hash)
        return tomb if tomb is not None and tomb.deadline_ms > now_ms else None

    def successor(self, token_hash: bytes, now_ms: int, live: Any) -> bytes | None:
        """The live hash a rotated-away `token_hash` still serves within its grace, if any."""
        for _ in range(MAX_CHAIN):
            tomb = self.tombstones.get(token_hash)
            if tomb is None or tomb.successor is None or not tomb.serves or now_ms >= tomb.grace_until_ms:
                return None
            token_hash = tomb.successor
            if token_hash in live:
                return token_hash
        return None

    def live_successor(self, token_hash: bytes, live: Any) -> bytes | None:
        """Where a rotation chain from `token_hash` ends in a live session, grace or not."""
        for _ in range(MAX_CHAIN):
            tomb = self.tombstones.get(token_hash)
            if tomb is None or tomb.successor is None:
                return None
            token_hash = tomb.successor
            if token_hash in live:
                return token_hash
        return None

    def is_reuse(self, token_hash: bytes, now_ms: int) -> bool:
        """Whether using `token_hash` now is an unreported reuse of a rotated-away token."""
        tomb = self.refuses(token_hash, now_ms)
        return (
            tomb is not None
            and tomb.reason is Ended.ROTATED
            and now_ms >= tomb.grace_until_ms
            and not tomb.reported
        )

    def mark_reported(self, token_hash: bytes) -> None:
        # Assigning an existing key keeps its place in the eviction order.
        self.tombstones[token_hash] = replace(self.tombstones[token_hash], reported=True)

    def sweep(self, now_ms: int, limit: int) -> int:
        """Drop up to `limit` tombstones whose deadline passed, earliest first."""
        removed = 0
        heap = self._heap
        while heap and heap[0][0] <= now_ms and removed < limit:
            deadline, key = heapq.heappop(heap)
            tomb = self.tombstones.get(key)
            if tomb is None or tomb.deadline_ms != deadline:
                continue  # evicted at the cap, or buried again later
            del self.tombstones[key]
            removed += 1
        if len(heap) > 2 * len(self.tombstones) + 1024:
            self._heap = sorted((t.deadline_ms, k) for k, t in self.tombstones.items())
        return removed

    # ---------------------------------------------------------------- principals
    def disable(self, principal: str, now_ms: int, cap: int) -> bool:
        """False when the set is full (the principal is not disabled)."""
        if principal not in self.disabled and len(self.disabled) >= cap:
            return False
        self.disabled.setdefault(principal, now_ms)
        return True

    # ------------------------------------------------------------- snapshots
    def capture(self) -> SecCapture | None:
        """Two shallow C-level copies (cheap under the state lock); None while inactive, so
        the snapshot of a cluster that never switched the rules on is what it was before."""
        if not self.active:
            return None
        return SecCapture(list(self.tombstones.items()), dict(self.disabled))

    def load(self, raw: Any) -> None:
        """Read the snapshot's "secops" value ([tombstone rows, disabled rows]); absent in
        snapshots of older releases and of clusters that never switched the rules on."""
        if raw is None:
            return
        tombs, disabled = raw
        self.active = True
        by_value = _ENDED_BY_VALUE
        for key, deadline, handle, reason, successor, grace, serves, reported in tombs:
            ended = by_value[reason]
            self.tombstones[key] = Tombstone(deadline, handle, ended, successor, grace, serves, reported)
        self._heap = sorted((t.deadline_ms, k) for k, t in self.tombstones.items())
        self.disabled = {p: at for p, at in disabled}

"""Lifecycle events: the bounded ring `SessionMachine.apply` appends to, part of the snapshot.

Every event gets the next number of one replicated sequence (its cursor), so every node
that applied the same log holds the same events under the same cursors, whichever node a
reader asks and whether that node replayed its journal or installed a snapshot. The ring
keeps the newest events within a count and a byte bound, both replicated (they arrive in
the `EnableEvents` command that switches the ring on); a reader whose cursor fell below
the oldest retained event is told so (`Compacted`), never handed a silent gap.

An event carries a session's handle and principal, never its token hash nor an attribute
value: an event stream is an audit feed, not a credential or data feed.

Adding an event kind is one line in `Kind` (plus the `_emit` call at its apply site);
readers see kinds as strings, so neither the proto nor the clients change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final


class Kind:
    """Every kind apply may emit. Adding one is one line here (plus its `_emit` call in
    state.py); a kind is never renamed: readers match on the string."""

    CREATED: Final = "created"
    ROTATED: Final = "rotated"
    UPDATED: Final = "updated"
    DELETED: Final = "deleted"
    # reason: "principal" (RevokePrincipal), "principal_cap" (evicted), "principal_disabled",
    # or "reuse" (its rotated-away token was used after the grace, with revoke_on_reuse on)
    REVOKED: Final = "revoked"
    EXPIRED: Final = "expired"  # reason: "idle" or "absolute"
    # A rotated-away token used after its grace: the handle it belonged to (the theft signal).
    REUSE_DETECTED: Final = "reuse_detected"


KINDS: tuple[str, ...] = tuple(value for name, value in vars(Kind).items() if name.isupper())

# (cursor, replicated time ms, kind, handle, principal or None, reason or "")
Event = tuple[int, int, str, str, str | None, str]

# What one event is charged against the byte bound besides its strings: a deterministic
# estimate (every node must evict at the same event), roughly the tuple and its ints.
EVENT_OVERHEAD_BYTES = 64
# Bounds EnableEvents may set: at least room for one event of the largest handle and principal.
MIN_COUNT, MAX_COUNT = 16, 1 << 20
MIN_BYTES, MAX_BYTES = 4096, 256 * 1024 * 1024


def event_bytes(event: Event) -> int:
    return EVENT_OVERHEAD_BYTES + len(event[3]) + len(event[4] or "") + len(event[5])


def check_bounds(max_count: int, max_bytes: int) -> str | None:
    if not MIN_COUNT <= max_count <= MAX_COUNT:
        return f"the event ring holds {MIN_COUNT} to {MAX_COUNT} events, not {max_count}"
    if not MIN_BYTES <= max_bytes <= MAX_BYTES:
        return f"the event ring holds {MIN_BYTES} to {MAX_BYTES} bytes, not {max_bytes}"
    return None


@dataclass(frozen=True, slots=True)
class Compacted:
    """The cursor's next event is no longer retained; `oldest` is the cursor to resume after."""

    cursor: int
    oldest: int


class EventRing:
    """A circular buffer indexed by cursor: O(1) append and O(1) seek to any retained cursor.

    A reader seeks by cursor instead of holding a queue per reader, so a slow reader costs
    the node nothing: when the ring moves past it, it is told `Compacted`.
    """

    __slots__ = ("_buf", "bytes", "max_bytes", "max_count", "next_cursor", "oldest")

    def __init__(self, max_count: int, max_bytes: int, next_cursor: int = 1) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        # Cursors start at 1, so cursor 0 means "before every event".
        self.next_cursor = next_cursor
        self.oldest = next_cursor  # == next_cursor while empty
        self.bytes = 0
        self._buf: list[Event | None] = [None] * max_count

    def __len__(self) -> int:
        return self.next_cursor - self.oldest

    @property
    def last_cursor(self) -> int:
        """The cursor of the newest event ever appended (0 before the first)."""
        return self.next_cursor - 1

    def append(self, at_ms: int, kind: str, handle: str, principal: str | None, reason: str = "") -> None:
        # On the write path of every mutation: one tuple, one store, integer arithmetic.
        cursor = self.next_cursor
        event = (cursor, at_ms, kind, handle, principal, reason)
        if cursor - self.oldest >= self.max_count:
            self._drop_oldest()
        self._buf[cursor % self.max_count] = event
        self.next_cursor = cursor + 1
        self.bytes += EVENT_OVERHEAD_BYTES + len(handle) + len(principal or "") + len(reason)
        while self.bytes > self.max_bytes and self.oldest < cursor:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        slot = self.oldest % self.max_count
        event = self._buf[slot]
        assert event is not None
        self.bytes -= event_bytes(event)
        self._buf[slot] = None
        self.oldest += 1

    def after(self, cursor: int, limit: int) -> list[Event] | Compacted:
        """Up to `limit` events after `cursor`, oldest first; Compacted if one was dropped."""
        if cursor + 1 < self.oldest:
            return Compacted(cursor, self.oldest - 1)
        end = min(self.next_cursor, cursor + 1 + limit)
        buf, cap = self._buf, self.max_count
        return [buf[c % cap] for c in range(cursor + 1, end)]  # type: ignore[misc]

    def events(self) -> Iterator[Event]:
        buf, cap = self._buf, self.max_count
        for c in range(self.oldest, self.next_cursor):
            event = buf[c % cap]
            assert event is not None
            yield event

    def resized(self, max_count: int, max_bytes: int) -> EventRing:
        """A ring with new bounds holding the newest events that fit; cursors continue."""
        kept = list(self.events())
        ring = EventRing(max_count, max_bytes, kept[0][0] if kept else self.next_cursor)
        for event in kept:
            ring.append(*event[1:])
        assert ring.next_cursor == self.next_cursor
        return ring

    # ---------------------------------------------------------------- snapshots
    def capture(self) -> list[Any]:
        """The ring as snapshot data: [max_count, max_bytes, next_cursor, [event, ...]].

        Events are immutable tuples: a list of them is a consistent copy."""
        return [self.max_count, self.max_bytes, self.next_cursor, list(self.events())]

    @classmethod
    def from_wire(cls, raw: Any) -> EventRing:
        max_count, max_bytes, next_cursor, events = raw
        ring = cls(max_count, max_bytes, events[0][0] if events else next_cursor)
        for cursor, at_ms, kind, handle, principal, reason in events:
            if cursor != ring.next_cursor:
                raise ValueError(f"event ring snapshot skips from cursor {ring.next_cursor} to {cursor}")
            ring.append(at_ms, kind, handle, principal, reason)
        if ring.next_cursor != next_cursor:
            raise ValueError("event ring snapshot: next cursor does not follow its events")
        return ring

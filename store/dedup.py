"""The exactly-once table: the latest answer per client id, replicated with the sessions.

Raft thesis 6.3: a client retries a command with the same (client id, sequence) after an
unknown outcome; the state machine answers the retry with the first answer instead of
applying it again, and refuses an older sequence outright (the client has moved on, so that
request must never apply late). The client keeps one request in flight per client id.

Bounded two ways, both deterministic (the table is part of every replica's state): at most
`max_dedup_clients` entries, least recently used evicted first, and entries idle for more
than `dedup_ttl_ms` of replicated time dropped at expire commands. A retry refreshes its
entry, so a client that keeps retrying is not forgotten while it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .replies import Code, Reply, reply_from_wire, reply_to_wire


@dataclass(slots=True)
class _Entry:
    sequence: int
    reply: Reply
    last_ms: int


class DedupTable:
    def __init__(self, max_clients: int, ttl_ms: int) -> None:
        self._max_clients = max_clients
        self._ttl_ms = ttl_ms
        # Insertion order is recency order: least recently used first.
        self._entries: dict[bytes, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def answer(self, client_id: bytes, sequence: int, now_ms: int) -> Reply | None:
        """The remembered answer for a retry, a refusal for an old sequence, or None: apply it."""
        seen = self._entries.get(client_id)
        if seen is None or sequence > seen.sequence:
            return None
        if sequence < seen.sequence:
            return Reply(
                Code.STALE_SEQUENCE,
                f"request sequence {sequence} is older than {seen.sequence}, "
                "already applied for this client id",
            )
        self._entries[client_id] = self._entries.pop(client_id)
        seen.last_ms = now_ms
        return seen.reply

    def remember(self, client_id: bytes, sequence: int, reply: Reply, now_ms: int) -> None:
        self._entries.pop(client_id, None)
        self._entries[client_id] = _Entry(sequence, reply, now_ms)
        while len(self._entries) > self._max_clients:
            del self._entries[next(iter(self._entries))]

    def expire(self, now_ms: int) -> None:
        """Drop entries idle for longer than the TTL (oldest first, so stop at the first young one)."""
        while self._entries:
            first = next(iter(self._entries))
            if now_ms - self._entries[first].last_ms <= self._ttl_ms:
                break
            del self._entries[first]

    def to_wire(self) -> list[list[Any]]:
        return [[cid, e.sequence, reply_to_wire(e.reply), e.last_ms] for cid, e in self._entries.items()]

    def load_wire(self, rows: list[list[Any]]) -> None:
        self._entries = {cid: _Entry(seq, reply_from_wire(reply), last) for cid, seq, reply, last in rows}

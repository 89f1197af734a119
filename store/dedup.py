"""The exactly-once table: the latest answer per client id, replicated with the sessions.

Raft thesis 6.3: a client retries a command with the same (client id, sequence) after an
unknown outcome; the state machine answers the retry with the first answer instead of
applying it again, and refuses an older sequence outright (the client has moved on, so that
request must never apply late). The client keeps one request in flight per client id.

Bounded two ways, both deterministic (the table is part of every replica's state): at most
`max_dedup_clients` entries, least recently used evicted first, and entries idle for more
than `dedup_ttl_ms` of replicated time dropped at expire commands. A retry refreshes its
entry, so a client that keeps retrying is not forgotten while it does.

Honest when it forgets. A bounded table must forget, and a retry of a forgotten request
would apply again (an increment twice; a rotate answered NotFound after it succeeded). So
the table keeps one number, `forgotten_ms`: the latest `last_ms` of any entry it dropped.
Every client id carries its epoch, a replicated time the client learned from the cluster
before using the id. Any apply of that id happens at a replicated time >= its epoch, so if
the id is unknown and its epoch is after `forgotten_ms`, nothing of it was ever recorded
and the request is new; otherwise it may be a forgotten retry, and it is answered
DEDUP_EXPIRED (nothing applied, outcome of the earlier attempt unknown). The client then
learns the current time (the answer carries it), and may resend a first attempt under a
fresh id; a retry it must report as an unknown outcome.

Bound to their request. An entry also keeps the request's fingerprint (commands.fingerprint,
from level 2): a request carrying a remembered (client id, sequence) but a different
operation or arguments is refused as INVALID, never answered with the other request's reply
(which leaked one session's data to another caller, and answered a logout "ok" without
running it). Two processes sharing a client id after a fork meet exactly this.

Entries are immutable records so that `capture()` is one shallow dict copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .replies import Code, Reply, reply_from_wire, reply_to_wire

# `forgotten_ms` before anything was forgotten: every epoch (>= 0) is after it.
NOTHING_FORGOTTEN = -1


@dataclass(frozen=True, slots=True)
class _Entry:
    sequence: int
    reply: Reply
    last_ms: int
    fingerprint: bytes | None = None


def dedup_expired(now_ms: int) -> Reply:
    return Reply(
        Code.DEDUP_EXPIRED,
        "deduplication state for this client id has expired: this request was not applied, and "
        "whether an earlier attempt with this request id was applied is unknown",
        count=now_ms,
    )


class DedupTable:
    def __init__(self, max_clients: int, ttl_ms: int) -> None:
        self.max_clients = max_clients
        self.ttl_ms = ttl_ms
        # Insertion order is recency order: least recently used first.
        self._entries: dict[bytes, _Entry] = {}
        self.forgotten_ms = NOTHING_FORGOTTEN
        # Retries answered with the remembered reply (a metric; not replicated state).
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def answer(
        self,
        client_id: bytes,
        sequence: int,
        epoch_ms: int | None,
        now_ms: int,
        fingerprint: bytes | None = None,
    ) -> Reply | None:
        """The remembered answer for a retry, a refusal, or None: apply it.

        `epoch_ms` None is a level-1 command (no epoch, no fingerprint): only remembered
        retries are caught.
        """
        seen = self._entries.get(client_id)
        if seen is None:
            if epoch_ms is not None and epoch_ms <= self.forgotten_ms:
                return dedup_expired(now_ms)
            return None
        if sequence > seen.sequence:
            return None
        if sequence < seen.sequence:
            return Reply(
                Code.STALE_SEQUENCE,
                f"request sequence {sequence} is older than {seen.sequence}, "
                "already applied for this client id",
            )
        if fingerprint is not None and seen.fingerprint is not None and fingerprint != seen.fingerprint:
            return Reply(
                Code.INVALID,
                f"request id (client id, sequence {sequence}) was already used for a different request; "
                "a client id must not be shared between processes",
            )
        del self._entries[client_id]
        self._entries[client_id] = _Entry(seen.sequence, seen.reply, now_ms, seen.fingerprint)
        self.hits += 1
        return seen.reply

    def remember(
        self, client_id: bytes, sequence: int, reply: Reply, now_ms: int, fingerprint: bytes | None = None
    ) -> None:
        self._entries.pop(client_id, None)
        self._entries[client_id] = _Entry(sequence, reply, now_ms, fingerprint)
        while len(self._entries) > self.max_clients:
            self._forget(next(iter(self._entries)))

    def expire(self, now_ms: int) -> None:
        """Drop entries idle for longer than the TTL (oldest first, so stop at the first young one)."""
        while self._entries:
            first = next(iter(self._entries))
            if now_ms - self._entries[first].last_ms <= self.ttl_ms:
                break
            self._forget(first)

    def _forget(self, client_id: bytes) -> None:
        entry = self._entries.pop(client_id)
        self.forgotten_ms = max(self.forgotten_ms, entry.last_ms)

    def capture(self) -> dict[bytes, _Entry]:
        """A consistent copy in one C-level pass: entries are immutable."""
        return dict(self._entries)

    @staticmethod
    def to_wire(entries: dict[bytes, _Entry]) -> list[list[Any]]:
        return [
            [cid, e.sequence, reply_to_wire(e.reply), e.last_ms, e.fingerprint] for cid, e in entries.items()
        ]

    def load_wire(self, rows: list[list[Any]], forgotten_ms: int) -> None:
        self._entries = {
            cid: _Entry(seq, reply_from_wire(reply), last, fp) for cid, seq, reply, last, fp in rows
        }
        self.forgotten_ms = forgotten_ms

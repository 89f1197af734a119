"""One session as the state machine holds it, and its immutable view for replies.

Immutable: apply replaces a session's record instead of changing it, so a snapshot can
capture the whole state with one shallow copy of the session dict under the state lock and
serialize it later, off the lock, while apply goes on (`SessionMachine.capture`). Replies
and the exactly-once table get `SessionView` copies, which never hold the token hash.

Compact, because a node holds every session in memory: the attributes are kept as ONE
bytes object, the canonical msgpack of the (name, value) pairs sorted by name, instead of a
dict of names and values (measured: 1.59 KB per 300-byte session with a dict, see
bench/README.md). A read decodes them (a microsecond or two); a snapshot copies the bytes
as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgpack

from .replies import SessionView

Pairs = tuple[tuple[str, bytes], ...]


def pack_attributes(pairs: Iterable[tuple[str, bytes]]) -> bytes:
    """The canonical form: pairs sorted by name (names are unique)."""
    return msgpack.packb(sorted(pairs), use_bin_type=True)


def unpack_attributes(packed: bytes) -> Pairs:
    return tuple((name, value) for name, value in msgpack.unpackb(packed, raw=False))


EMPTY_ATTRIBUTES = pack_attributes(())


@dataclass(frozen=True, slots=True)
class Session:
    token_hash: bytes
    handle: str
    principal: str | None
    # pack_attributes() of the session's attributes; never decoded by a snapshot.
    attributes: bytes
    created_ms: int
    last_access_ms: int
    idle_timeout_ms: int
    absolute_deadline_ms: int
    version: int

    @property
    def deadline_ms(self) -> int:
        return min(self.absolute_deadline_ms, self.last_access_ms + self.idle_timeout_ms)

    def pairs(self) -> Pairs:
        return unpack_attributes(self.attributes)

    def expiry_reason(self, now_ms: int) -> str | None:
        if now_ms >= self.absolute_deadline_ms:
            return "session expired (absolute lifetime reached)"
        if now_ms >= self.last_access_ms + self.idle_timeout_ms:
            return "session expired (idle timeout)"
        return None

    def view(self, with_attributes: bool) -> SessionView:
        return SessionView(
            handle=self.handle,
            principal=self.principal,
            attributes=self.pairs() if with_attributes else (),
            created_ms=self.created_ms,
            last_access_ms=self.last_access_ms,
            idle_timeout_ms=self.idle_timeout_ms,
            absolute_deadline_ms=self.absolute_deadline_ms,
            version=self.version,
        )

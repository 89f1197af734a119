"""One session as the state machine holds it, and its immutable view for replies.

Immutable: apply replaces a session's record instead of changing it, so a snapshot can
capture the whole state with one shallow copy of the session dict under the state lock and
serialize it later, off the lock, while apply goes on (`SessionMachine.capture`). Replies
and the exactly-once table get `SessionView` copies, which never hold the token hash.
"""

from __future__ import annotations

from dataclasses import dataclass

from .replies import SessionView


@dataclass(frozen=True, slots=True)
class Session:
    token_hash: bytes
    handle: str
    principal: str | None
    # Never changed in place: an update builds a new dict (the record is shared with captures).
    attributes: dict[str, bytes]
    created_ms: int
    last_access_ms: int
    idle_timeout_ms: int
    absolute_deadline_ms: int
    version: int

    @property
    def deadline_ms(self) -> int:
        return min(self.absolute_deadline_ms, self.last_access_ms + self.idle_timeout_ms)

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
            attributes=tuple(sorted(self.attributes.items())) if with_attributes else (),
            created_ms=self.created_ms,
            last_access_ms=self.last_access_ms,
            idle_timeout_ms=self.idle_timeout_ms,
            absolute_deadline_ms=self.absolute_deadline_ms,
            version=self.version,
        )

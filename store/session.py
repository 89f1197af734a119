"""One session as the state machine holds it, and its immutable view for replies.

Mutable on purpose (apply updates it in place); replies and the exactly-once table get
`SessionView` copies, which never hold the token hash.
"""

from __future__ import annotations

from dataclasses import dataclass

from .replies import SessionView


@dataclass(slots=True)
class Session:
    token_hash: bytes
    handle: str
    principal: str | None
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

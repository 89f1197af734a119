"""What applying a command answers: a domain outcome as a value, never an exception.

Replies are stored in the exactly-once table and therefore in snapshots, so they have a
fixed msgpack form (`reply_to_wire` / `reply_from_wire`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Code(StrEnum):
    OK = "ok"
    INVALID = "invalid"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    VERSION_CONFLICT = "version_conflict"
    QUOTA = "quota"
    STALE_SEQUENCE = "stale_sequence"
    # The client id's exactly-once entry may have been forgotten: not applied (dedup.py).
    # `Reply.count` carries the replicated time, the epoch for a fresh client id.
    DEDUP_EXPIRED = "dedup_expired"
    # The proposer read stale state (an Update's values bound to another handle): nothing
    # was applied and, unlike every other outcome, it is not remembered: retry (level 5).
    RETRY = "retry"
    # The principal is disabled (level 5, store/secops.py): no new session for it.
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class SessionView:
    """An immutable copy of a session for replies; never holds the token hash."""

    handle: str
    principal: str | None
    attributes: tuple[tuple[str, bytes], ...]
    created_ms: int
    last_access_ms: int
    idle_timeout_ms: int
    absolute_deadline_ms: int
    version: int


@dataclass(frozen=True, slots=True)
class Reply:
    code: Code
    message: str = ""
    session: SessionView | None = None
    # Evicted (create/rotate at the principal cap) or revoked session handles.
    handles: tuple[str, ...] = ()
    existed: bool = False
    count: int = 0

    @property
    def ok(self) -> bool:
        return self.code is Code.OK


def reply_to_wire(r: Reply) -> list[Any]:
    s = r.session
    session = (
        None
        if s is None
        else [
            s.handle,
            s.principal,
            [list(a) for a in s.attributes],
            s.created_ms,
            s.last_access_ms,
            s.idle_timeout_ms,
            s.absolute_deadline_ms,
            s.version,
        ]
    )
    return [r.code.value, r.message, session, list(r.handles), r.existed, r.count]


def reply_from_wire(raw: list[Any]) -> Reply:
    code, message, session, handles, existed, count = raw
    view = None
    if session is not None:
        handle, principal, attrs, created, last, idle, absolute, version = session
        view = SessionView(
            handle, principal, tuple((n, val) for n, val in attrs), created, last, idle, absolute, version
        )
    return Reply(Code(code), message, view, tuple(handles), existed, count)

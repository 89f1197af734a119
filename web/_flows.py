"""What the web layer asks of the store, written once for both clients.

Each flow is a generator that yields `Call`s (a client method and its arguments) and is
sent back each answer, or has the client's error thrown into it. `run_sync` drives one
with a SessionClient, `run_async` with an AsyncSessionClient: one implementation of load,
save, merge, login and logout, two ways of waiting (the client itself is built the same way).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sessionquorum.client import (
    AsyncSessionClient,
    Created,
    NotFound,
    OutcomeUnknown,
    Rotated,
    Session,
    SessionClient,
    SessionQuorumError,
    VersionConflict,
)

from ._cookies import CookiePolicy
from ._errors import SessionConflict
from ._serializers import JSONSerializer, Serializer
from ._state import SessionData

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""An absent attribute, as the merge hook sees it (and returns it, to delete)."""

Merge = Callable[[str, Any, Any, Any], Any]
"""merge(name, base, ours, theirs) -> the value to write, or MISSING to delete it."""


def refuse_overlap(name: str, base: Any, ours: Any, theirs: Any) -> Any:
    """The default merge hook: two requests changed the same attribute; raise SessionConflict."""
    raise SessionConflict(name)


def last_writer_wins(name: str, base: Any, ours: Any, theirs: Any) -> Any:
    """A merge hook that keeps this request's value (the other request's is lost)."""
    return ours


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """Everything a backend needs besides the client. The defaults are the secure ones.

    The store enforces both timeouts; OWASP suggests 15-30 min idle for low-risk
    applications and 4-8 h absolute.
    """

    cookie: CookiePolicy = field(default_factory=CookiePolicy)
    serializer: Serializer = field(default_factory=JSONSerializer)
    merge: Merge = refuse_overlap
    idle_timeout_s: float = 30 * 60
    absolute_timeout_s: float = 8 * 3600
    # Validate with touch=True: the store writes a touch at most once per its touch interval.
    touch: bool = True
    # Re-reads and merges after a VersionConflict before giving up with it.
    max_merges: int = 3


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


Flow = Generator[Call, Any, _T]


def _advance(flow: Flow[_T], reply: Any, error: SessionQuorumError | None) -> tuple[Call | None, _T | None]:
    """Hand the flow the last answer (or error); returns (next call, None) or (None, the result)."""
    try:
        return (flow.send(reply) if error is None else flow.throw(error)), None
    except StopIteration as stop:
        return None, stop.value


def run_sync(flow: Flow[_T], client: SessionClient) -> _T:
    call, result = _advance(flow, None, None)
    while call is not None:
        try:
            reply = getattr(client, call.method)(*call.args, **call.kwargs)
        except SessionQuorumError as exc:
            call, result = _advance(flow, None, exc)
        else:
            call, result = _advance(flow, reply, None)
    return result  # type: ignore[return-value]  # a flow's result may legitimately be None


async def run_async(flow: Flow[_T], client: AsyncSessionClient) -> _T:
    call, result = _advance(flow, None, None)
    while call is not None:
        try:
            reply = await getattr(client, call.method)(*call.args, **call.kwargs)
        except SessionQuorumError as exc:
            call, result = _advance(flow, None, exc)
        else:
            call, result = _advance(flow, reply, None)
    return result  # type: ignore[return-value]


# -- flows ----------------------------------------------------------------------------------


def load(data: SessionData, token: str | None, options: SessionOptions) -> Flow[None]:
    """Strict mode: only a token the store knows is adopted; otherwise the session is empty."""
    if token is None:
        data.adopt(None, None)
        return
    try:
        session = yield Call("validate", (token,), {"touch": options.touch})
    except NotFound:
        data.adopt(None, None)  # unknown, expired or revoked: never adopted
        return
    data.adopt(session, token)


def save(data: SessionData, options: SessionOptions) -> Flow[None]:
    """Write back what changed: nothing, a create (first value of an anonymous visitor), or an update."""
    if not data.loaded:
        return  # never touched by the application: nothing can have changed
    to_set, to_delete = data.changes()
    if data.session is None or data.token is None:
        if to_set:
            created = yield from _create(data, None, options)
            data.issued(created.session, created.token)
        else:
            data.forget_stale_cookie()
        return
    for attempt in range(options.max_merges + 1):
        if not to_set and not to_delete and data.idle_timeout_s is None:
            return
        changes: dict[str, Any] = {
            "set": to_set,
            "delete": to_delete,
            "expected_version": data.session.version,
        }
        if data.idle_timeout_s is not None:
            changes["idle_timeout_s"] = data.idle_timeout_s
        try:
            session = yield Call("update", (data.token,), changes)
        except NotFound:
            # Rotated, logged out or expired while this request ran. Writing a new session
            # now could replace the cookie a concurrent login just set; the change is dropped.
            logger.warning("session ended during the request; its changes were dropped")
            return
        except VersionConflict:
            if attempt == options.max_merges:
                raise
            try:
                theirs = yield Call("validate", (data.token,), {})
            except NotFound:
                logger.warning("session ended during the request; its changes were dropped")
                return
            to_set, to_delete = _merge(data, theirs, to_set, to_delete, options.merge)
            continue
        data.saved(session, data.token, to_set, to_delete)
        return


def login(data: SessionData, principal: str, remember: bool | None, options: SessionOptions) -> Flow[None]:
    """A new token bound to `principal`, keeping the data (session fixation defence).

    `remember` makes the cookie persistent (True) or a browser-session cookie (False);
    None leaves it as it is.
    """
    data.ensure_loaded()
    if remember is not None:
        data.remember = remember
    remembered = data.remember
    if data.session is not None and data.token is not None and data.principal not in (None, principal):
        # Someone else's session: none of its data may pass to the new user.
        yield Call("delete", (data.token,), {})
        data.ended()
        data.clear_site_data = False
        data.remember = remembered
    if data.session is None or data.token is None:
        created = yield from _create(data, principal, options)
        data.issued(created.session, created.token)
        return
    try:
        rotated = yield from _rotate(data.token, principal)
    except NotFound:  # it ended since it was loaded: start afresh, with what this request holds
        created = yield from _create(data, principal, options)
        data.issued(created.session, created.token)
        return
    data.rotated(rotated.session, rotated.token)


def create(data: SessionData, principal: str | None, options: SessionOptions) -> Flow[None]:
    """A new session now, holding what the request has so far (Django's create())."""
    data.ensure_loaded()
    created = yield from _create(data, principal, options)
    data.issued(created.session, created.token)


def regenerate(data: SessionData) -> Flow[None]:
    """A new token for the same session (privilege change); nothing to do for an anonymous one."""
    data.ensure_loaded()
    if data.session is None or data.token is None:
        return
    try:
        rotated = yield from _rotate(data.token, None)
    except NotFound:
        data.adopt(None, None)
        return
    data.rotated(rotated.session, rotated.token)


def logout(data: SessionData) -> Flow[bool]:
    """End the session in the store at once; the browser is told to drop its cookies."""
    data.ensure_loaded()
    existed = False
    if data.token is not None:
        existed = yield Call("delete", (data.token,), {})
    data.ended()
    return bool(existed)


def logout_everywhere(data: SessionData, keep_current: bool) -> Flow[list[str]]:
    """End every session of this session's principal, this one too unless `keep_current`."""
    data.ensure_loaded()
    if data.session is None or data.principal is None:
        return []
    keep = data.session.handle if keep_current else None
    # The current session's token: what lets an app-role certificate act for this principal.
    scope = {"token": data.token}
    handles: list[str] = yield Call("revoke_principal", (data.principal,), {"except_handle": keep, **scope})
    if not keep_current:
        data.ended()
    return handles


def my_sessions(data: SessionData) -> Flow[list[Session]]:
    """This principal's live sessions (metadata and handles, never tokens); [] when anonymous."""
    data.ensure_loaded()
    if data.principal is None:
        return []
    sessions: list[Session] = yield Call("list_sessions", (data.principal,), {"token": data.token})
    return sessions


def end_session(data: SessionData, handle: str) -> Flow[bool]:
    """End one of this principal's sessions by handle (a "your devices" page's revoke button)."""
    data.ensure_loaded()
    if data.principal is None:
        return False
    sessions: list[Session] = yield Call("list_sessions", (data.principal,), {"token": data.token})
    if handle not in {s.handle for s in sessions}:
        return False  # never someone else's session, whatever handle the form posted
    existed: bool = yield Call("delete_handle", (handle,), {})
    if handle == data.handle:
        data.ended()
    return existed


# -- pieces -----------------------------------------------------------------------------------


def _create(data: SessionData, principal: str | None, options: SessionOptions) -> Flow[Created]:
    kwargs = {
        "principal": principal,
        "attributes": data.encoded(),
        "idle_timeout_s": options.idle_timeout_s,
        "absolute_timeout_s": options.absolute_timeout_s,
    }
    try:
        created: Created = yield Call("create", (), kwargs)
    except OutcomeUnknown as exc:
        session = yield from _took_effect(exc)
        return Created(token=exc.token or "", session=session, evicted_handles=())
    return created


def _rotate(token: str, principal: str | None) -> Flow[Rotated]:
    try:
        rotated: Rotated = yield Call("rotate", (token,), {"principal": principal})
    except OutcomeUnknown as exc:
        session = yield from _took_effect(exc)
        return Rotated(token=exc.token or "", session=session, evicted_handles=())
    return rotated


def _took_effect(exc: OutcomeUnknown) -> Flow[Session]:
    """After an unknown create/rotate outcome: the session under the new token, or the error again.

    A rotate that did apply while we gave up would strand the user (the old token is dead),
    so ask the store, as the client documents.
    """
    if exc.token is None:
        raise exc
    try:
        session: Session = yield Call("validate", (exc.token,), {})
    except NotFound:
        raise exc from None
    return session


def _merge(
    data: SessionData, theirs: Session, to_set: dict[str, bytes], to_delete: list[str], merge: Merge
) -> tuple[dict[str, bytes], list[str]]:
    """Re-apply this request's changes on top of a concurrent writer's (after VersionConflict).

    Attributes only one side changed merge by themselves; the hook decides the others.
    """
    base = data.base
    current = dict(theirs.attributes)
    result = dict(current)
    for name in set(to_set) | set(to_delete):
        ours = to_set.get(name)
        if current.get(name) == base.get(name):  # they left it alone
            raw = ours
        else:
            value = merge(
                name,
                _decoded(data, base.get(name)),
                _decoded(data, ours),
                _decoded(data, current.get(name)),
            )
            raw = None if value is MISSING else data.encode_value(value)
        if raw is None:
            result.pop(name, None)
        else:
            result[name] = raw
    data.rebase(theirs, result)
    return data.changes()


def _decoded(data: SessionData, raw: bytes | None) -> Any:
    return MISSING if raw is None else data.decode(raw)

"""A Django session engine (SESSION_ENGINE) and the middleware that gives it the secure cookie.

    SESSION_ENGINE = "sessionquorum.web.django"
    SESSIONQUORUM_CLIENT = "myproject.sessions.client"   # a SessionClient, or its dotted path
    MIDDLEWARE = [..., "sessionquorum.web.django.SessionMiddleware", ...]   # instead of Django's

The engine alone works under Django's own SessionMiddleware (then Django's SESSION_COOKIE_*
settings name and flag the cookie); this module's middleware replaces it to apply the
defaults of web/DESIGN.md: `__Host-` name, Secure, HttpOnly, SameSite=Lax, a browser-session
cookie unless `set_expiry()` asked for a lifetime, `Cache-Control: no-store` with every
Set-Cookie, `Clear-Site-Data: "cookies"` after `flush()`.

Django's meanings hold: `cycle_key()` (called by `django.contrib.auth.login`) moves the
session to a new token keeping its data, as one store `rotate` at save that also binds the
logged-in user's id as the principal; `flush()` ends the session in the store at once;
`set_expiry(seconds)` sets the session's idle timeout in the store, at creation or, for an
existing session, with the next save (an Update carrying the new idle timeout).
`SESSIONQUORUM_OPTIONS` may hold a SessionOptions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers
from django.utils.module_loading import import_string

from sessionquorum.client import NotFound, Session, SessionClient

from . import _flows as flows
from ._cookies import is_token
from ._flows import SessionOptions
from ._state import Cookie, SessionData

__all__ = ["AUTH_USER_KEY", "SessionMiddleware", "SessionStore"]

# django.contrib.auth's session key for the user's id (django.contrib.auth.SESSION_KEY).
AUTH_USER_KEY = "_auth_user_id"
_EXPIRY_KEY = "_session_expiry"


def _client() -> SessionClient:
    configured: Any = getattr(settings, "SESSIONQUORUM_CLIENT", None)
    if isinstance(configured, str):
        configured = import_string(configured)
    if callable(configured) and not isinstance(configured, SessionClient):
        configured = configured()
    if not isinstance(configured, SessionClient):
        raise TypeError("settings.SESSIONQUORUM_CLIENT must be a SessionClient or the dotted path of one")
    return configured


def _options() -> SessionOptions:
    configured = getattr(settings, "SESSIONQUORUM_OPTIONS", None)
    return configured if isinstance(configured, SessionOptions) else SessionOptions()


class SessionStore(SessionBase):
    """Django's SessionBase on a sessionquorum cluster; the session key is the store's token."""

    def __init__(self, session_key: str | None = None) -> None:
        # Django's own middleware passes the raw cookie: a value we cannot have issued is no key.
        super().__init__(session_key if session_key is not None and is_token(session_key) else None)
        self._options = _options()
        self._data = SessionData(self._options.serializer, presented=session_key is not None)
        self._rotate_pending = False

    def _run(self, flow: flows.Flow[Any]) -> Any:
        return flows.run_sync(flow, _client())

    # -- loading: lazy, strict --------------------------------------------------------------

    def _get_session(self, no_load: bool = False) -> SessionData:
        self.accessed = True
        if not self._data.loaded:
            if self.session_key is None or no_load:
                self._data.adopt(None, None)
            else:
                self.load()
        return self._data

    _session = property(_get_session)

    def load(self) -> dict[str, Any]:
        self._run(flows.load(self._data, self.session_key, self._options))
        if self._data.session is None:
            self._session_key = None  # strict mode: an unknown or expired key is never adopted
        return self._data  # type: ignore[return-value]  # a MutableMapping that tracks changes

    def is_empty(self) -> bool:
        return not self.session_key and (not self._data.loaded or not self._data)

    def clear(self) -> None:
        self._session.clear()
        self.accessed = self.modified = True

    def exists(self, session_key: str | None) -> bool:
        if session_key is None or not is_token(session_key):
            return False
        try:
            _client().validate(session_key)
        except NotFound:
            return False
        return True

    # -- writing ----------------------------------------------------------------------------

    def create(self) -> None:
        self._run(flows.create(self._session, self._principal(), self._create_options()))
        self._session_key = self._data.token
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        data = self._session
        data.remember = not self._browser_session()
        principal = self._principal()
        if self._rotate_pending or (data.session is None and principal is not None):
            if principal is not None:
                self._run(flows.login(data, principal, None, self._create_options()))
            elif data.session is None:
                self._run(flows.create(data, None, self._create_options()))
            else:
                self._run(flows.regenerate(data))
            self._rotate_pending = False
        expiry = data.get(_EXPIRY_KEY) if data.loaded else None
        stored = data.session
        if (
            isinstance(expiry, int)
            and expiry > 0
            and stored is not None
            and stored.idle_timeout_ms != expiry * 1000
        ):
            # set_expiry(seconds) on an existing session: its idle timeout in the store too.
            data.idle_timeout_s = float(expiry)
        self._run(flows.save(data, self._create_options()))
        self._session_key = data.token

    def cycle_key(self) -> None:
        """A new key at the next save, data kept: one rotate, which also binds the logged-in user."""
        self._get_session()
        self._rotate_pending = True
        self.modified = True

    def delete(self, session_key: str | None = None) -> None:
        if session_key is None or session_key == self.session_key:
            if self.session_key is not None or self._data.presented:
                self._run(flows.logout(self._session))
            return
        if is_token(session_key):
            _client().delete(session_key)

    # -- helpers beyond Django's API ----------------------------------------------------------

    def logout_everywhere(self, *, keep_current: bool = True) -> list[str]:
        handles: list[str] = self._run(flows.logout_everywhere(self._session, keep_current))
        self._session_key = self._data.token
        return handles

    def my_sessions(self) -> list[Session]:
        sessions: list[Session] = self._run(flows.my_sessions(self._session))
        return sessions

    def end_session(self, handle: str) -> bool:
        ended: bool = self._run(flows.end_session(self._session, handle))
        self._session_key = self._data.token
        return ended

    @property
    def handle(self) -> str | None:
        return self._get_session().handle

    @property
    def state(self) -> SessionData:
        """The web layer's view of this session (cookie decision, token, metadata)."""
        return self._data

    @property
    def options(self) -> SessionOptions:
        return self._options

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: the store expires sessions itself (idle and absolute)."""

    # -- pieces -----------------------------------------------------------------------------

    def _principal(self) -> str | None:
        user_id = self._data.get(AUTH_USER_KEY) if self._data.loaded else None
        return None if user_id is None else str(user_id)

    def _browser_session(self) -> bool:
        expiry = self._data.get(_EXPIRY_KEY)
        return expiry is None or expiry == 0

    def _create_options(self) -> SessionOptions:
        expiry = self._data.get(_EXPIRY_KEY) if self._data.loaded else None
        if isinstance(expiry, int) and expiry > 0:
            # set_expiry(seconds) = "after that many seconds of inactivity": the idle timeout.
            return dataclasses.replace(self._options, idle_timeout_s=float(expiry))
        return self._options


class SessionMiddleware:
    """Replaces django.contrib.sessions.middleware.SessionMiddleware for this engine."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        policy = _options().cookie
        # The key comes from the cookie only: never from the query string or a form field.
        session = SessionStore(policy.token_from(request.COOKIES))
        request.session = session
        response = self.get_response(request)
        return self._finish(session, response)

    def _finish(self, session: SessionStore, response: HttpResponse) -> HttpResponse:
        data = session.state
        save_every = getattr(settings, "SESSION_SAVE_EVERY_REQUEST", False)
        if data.loaded and response.status_code < 500 and (session.modified or save_every):
            session.save()
        elif data.loaded:
            data.forget_stale_cookie()
        if session.accessed or data.presented:
            patch_vary_headers(response, ("Cookie",))
        policy = session.options.cookie
        if data.remember and data.session is not None:
            policy = dataclasses.replace(policy, remember_max_age_s=max(1, session.get_expiry_age()))
        cookie, max_age = data.cookie_decision(policy)
        if cookie is Cookie.SET and data.token is not None:
            response.set_cookie(
                policy.cookie_name,
                data.token,
                max_age=max_age,
                path="/",
                secure=policy.secure,
                httponly=True,
                samesite=policy.same_site,
            )
            response["Cache-Control"] = "no-store"
        elif cookie is Cookie.CLEAR:
            response.delete_cookie(policy.cookie_name, path="/", samesite=policy.same_site)
            response["Cache-Control"] = "no-store"
            if data.clear_site_data and policy.clear_site_data:
                response["Clear-Site-Data"] = '"cookies"'
        return response

"""A Flask SessionInterface on the sync SessionClient.

    app.session_interface = QuorumSessionInterface(SessionClient(endpoints, tls=tls))

`flask.session` is loaded from the store at its first use (a request that never touches it
costs no store call) and written back after the view, only the attributes that changed.
What Flask users know keeps its meaning: `session.modified`, `session.permanent` (a
remembered, persistent cookie; the store's absolute lifetime still ends it),
`PERMANENT_SESSION_LIFETIME` (caps that cookie) and `SESSION_REFRESH_EACH_REQUEST` (a touch
on load, coalesced by the store, and a persistent cookie sent again). The session object
adds `regenerate()`, `login(principal)`, `logout()`, `logout_everywhere()`,
`my_sessions()` and `end_session(handle)`. Flask's own SESSION_COOKIE_* settings are not
used: the cookie follows `SessionOptions.cookie` (web/DESIGN.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin

from sessionquorum.client import Session, SessionClient

from . import _flows as flows
from ._flows import SessionOptions
from ._state import SessionData

__all__ = ["QuorumSession", "QuorumSessionInterface"]


class QuorumSession(SessionData, SessionMixin):
    """`flask.session`: a dict-like SessionData with Flask's flags and the session helpers."""

    def __init__(self, client: SessionClient, options: SessionOptions, token: str | None) -> None:
        super().__init__(options.serializer, presented=token is not None, loader=self._load)
        self._client = client
        self._options = options
        self._token = token
        self.new = token is None

    def _load(self) -> None:
        flows.run_sync(flows.load(self, self._token, self._options), self._client)

    @property
    def permanent(self) -> bool:
        self.ensure_loaded()
        return self.remember

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self.ensure_loaded()
        self.remember = value
        self.modified = True

    def regenerate(self) -> None:
        """A new token for the same session, data kept (Flask-Session's name for it)."""
        flows.run_sync(flows.regenerate(self), self._client)

    def login(self, principal: str, *, remember: bool = False) -> None:
        """Rotate to a new token bound to `principal` in one store call; `remember` = permanent."""
        flows.run_sync(flows.login(self, principal, remember, self._options), self._client)
        self.modified = True

    def logout(self) -> bool:
        """End this session in the store; the response clears the cookie (Clear-Site-Data)."""
        return flows.run_sync(flows.logout(self), self._client)

    def logout_everywhere(self, *, keep_current: bool = True) -> list[str]:
        return flows.run_sync(flows.logout_everywhere(self, keep_current), self._client)

    def my_sessions(self) -> list[Session]:
        return flows.run_sync(flows.my_sessions(self), self._client)

    def end_session(self, handle: str) -> bool:
        return flows.run_sync(flows.end_session(self, handle), self._client)


class QuorumSessionInterface(SessionInterface):
    """Server-side Flask sessions in a sessionquorum cluster."""

    def __init__(self, client: SessionClient, options: SessionOptions | None = None) -> None:
        self.client = client
        self.options = options or SessionOptions()

    def open_session(self, app: Flask, request: Request) -> QuorumSession:
        options = dataclasses.replace(self.options, touch=self.options.touch and _refresh(app))
        # The token comes from the cookie only: never from the query string or a form field.
        token = options.cookie.token_from(request.cookies)
        session = QuorumSession(self.client, options, token)
        if token is None:
            session.adopt(None, None)  # nothing to load: no store call without a cookie
        return session

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, QuorumSession):
            return  # Flask's null session (open_session never fails here, but be plain about it)
        flows.run_sync(flows.save(session, self.options), self.client)
        lifetime_s = int(app.permanent_session_lifetime.total_seconds())
        cookie = dataclasses.replace(
            self.options.cookie,
            remember_max_age_s=max(1, min(lifetime_s, self.options.cookie.remember_max_age_s)),
        )
        for name, value in session.cookie_headers(cookie, refresh_remembered=_refresh(app)):
            if name == "Vary":
                response.vary.add(value)
            elif name == "Cache-Control":
                response.headers[name] = value  # replaces a view's caching header
            else:
                response.headers.add(name, value)


def _refresh(app: Flask) -> Any:
    return app.config["SESSION_REFRESH_EACH_REQUEST"]

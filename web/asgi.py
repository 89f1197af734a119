"""ASGI middleware (Starlette, FastAPI) on the AsyncSessionClient.

    app.add_middleware(SessionMiddleware, client=AsyncSessionClient(endpoints, tls=tls))

`request.session` (scope["session"]) is a dict-like SessionData. A request without our
cookie costs no store call at all; one with it is validated once, before the application
runs (an ASGI application reads `request.session` synchronously, so it cannot wait for the
store on first use; with `autoload=False` nothing is loaded until `await load_session(request)`).
Changes are written back, only the attributes that changed, when the response starts.
A WebSocket connection gets the session loaded, read-only: it has no response to carry a
cookie, so nothing it changes is written.
Login, logout and the device list are coroutines taking the request:

    await login(request, "alice")          # new token bound to alice, data kept
    await logout(request)                  # ended in the store; Clear-Site-Data
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionquorum.client import AsyncSessionClient, Session

from . import _flows as flows
from ._flows import SessionOptions
from ._state import SessionData

__all__ = [
    "SessionMiddleware",
    "end_session",
    "load_session",
    "login",
    "logout",
    "logout_everywhere",
    "my_sessions",
    "regenerate",
]

SCOPE_KEY = "sessionquorum"


@dataclass(slots=True)
class _Bound:
    client: AsyncSessionClient
    options: SessionOptions
    data: SessionData
    token: str | None


class SessionMiddleware:
    """Server-side sessions in the store, with the cookie and cache defaults of web/DESIGN.md."""

    def __init__(
        self,
        app: ASGIApp,
        client: AsyncSessionClient,
        options: SessionOptions | None = None,
        *,
        autoload: bool = True,
    ) -> None:
        self.app = app
        self.client = client
        self.options = options or SessionOptions()
        self.autoload = autoload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        options = self.options
        # The token comes from the cookie only: never from a query string or a form field.
        token = options.cookie.token_from(HTTPConnection(scope).cookies)
        data = SessionData(options.serializer, presented=token is not None, explicit_load=not self.autoload)
        bound = _Bound(self.client, options, data, token)
        scope["session"] = data
        scope[SCOPE_KEY] = bound
        if token is None:
            data.adopt(None, None)  # nothing to load: no store call for cookieless requests
        elif self.autoload:
            await flows.run_async(flows.load(data, token, options), self.client)

        async def send_with_session(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Written before the response starts, so the next request sees it.
                await flows.run_async(flows.save(data, options), self.client)
                headers = MutableHeaders(scope=message)
                for name, value in data.cookie_headers(options.cookie, refresh_remembered=False):
                    if name == "Vary":
                        headers.add_vary_header(value)
                    elif name == "Cache-Control":
                        headers[name] = value  # replaces the application's caching header
                    else:
                        headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_session)


def _bound(connection: HTTPConnection) -> _Bound:
    bound = connection.scope.get(SCOPE_KEY)
    if not isinstance(bound, _Bound):
        raise RuntimeError("sessionquorum.web.asgi.SessionMiddleware is not installed on this application")
    return bound


async def load_session(connection: HTTPConnection) -> SessionData:
    """Load the session now (needed only with autoload=False); idempotent."""
    bound = _bound(connection)
    if not bound.data.loaded:
        await flows.run_async(flows.load(bound.data, bound.token, bound.options), bound.client)
    return bound.data


async def login(connection: HTTPConnection, principal: str, *, remember: bool = False) -> None:
    """Rotate to a new token bound to `principal`, data kept; `remember`: a persistent cookie."""
    bound = await _loaded(connection)
    await flows.run_async(flows.login(bound.data, principal, remember, bound.options), bound.client)


async def regenerate(connection: HTTPConnection) -> None:
    """A new token for the same session (after a privilege change)."""
    bound = await _loaded(connection)
    await flows.run_async(flows.regenerate(bound.data), bound.client)


async def logout(connection: HTTPConnection) -> bool:
    """End this session in the store; the response clears the cookie (Clear-Site-Data)."""
    bound = await _loaded(connection)
    return await flows.run_async(flows.logout(bound.data), bound.client)


async def logout_everywhere(connection: HTTPConnection, *, keep_current: bool = True) -> list[str]:
    """End every session of the logged-in principal (all others with keep_current); the ended handles."""
    bound = await _loaded(connection)
    return await flows.run_async(flows.logout_everywhere(bound.data, keep_current), bound.client)


async def my_sessions(connection: HTTPConnection) -> list[Session]:
    """The logged-in principal's sessions, for a "your devices" page ([] when anonymous)."""
    bound = await _loaded(connection)
    return await flows.run_async(flows.my_sessions(bound.data), bound.client)


async def end_session(connection: HTTPConnection, handle: str) -> bool:
    """End one of the logged-in principal's own sessions by handle."""
    bound = await _loaded(connection)
    return await flows.run_async(flows.end_session(bound.data, handle), bound.client)


async def _loaded(connection: HTTPConnection) -> _Bound:
    await load_session(connection)
    return _bound(connection)

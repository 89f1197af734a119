"""sessionquorum.web.asgi with Starlette's TestClient, against the in-process store.

Every test runs inside `with TestClient(...)`: the app's AsyncSessionClient is bound to the
event loop of its first call, and the context manager keeps one loop for the whole test.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionquorum.client import AsyncSessionClient, Session
from sessionquorum.web import SessionNotLoaded, SessionOptions
from sessionquorum.web.asgi import (
    SessionMiddleware,
    load_session,
    login,
    logout,
    logout_everywhere,
    my_sessions,
)
from tests.web.checks import COOKIE, assert_cleared, assert_secure_cookie
from tests.web.inprocess_store import InProcessStore

BASE_URL = "https://testserver"


class RecordingClient(AsyncSessionClient):
    """Records what each update sends, to prove that only changed attributes go."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.updates: list[dict[str, Any]] = []

    async def update(self, token: str, **kwargs: Any) -> Session:
        self.updates.append(kwargs)
        return await super().update(token, **kwargs)


def make_app(client: AsyncSessionClient, options: SessionOptions | None = None) -> Starlette:
    async def show(request: Request) -> Response:
        session = request.session
        return JSONResponse({"data": dict(session), "principal": session.principal})  # type: ignore[attr-defined]

    async def add(request: Request) -> Response:
        request.session.setdefault("cart", []).append(request.query_params["item"])
        return JSONResponse(request.session["cart"])

    async def theme(request: Request) -> Response:
        request.session["theme"] = request.query_params["theme"]
        return Response("ok")

    async def sign_in(request: Request) -> Response:
        await login(
            request, request.query_params["user"], remember=request.query_params.get("remember") == "1"
        )
        return Response("welcome")

    async def sign_out(request: Request) -> Response:
        await logout(request)
        return Response("bye")

    async def devices(request: Request) -> Response:
        return JSONResponse([s.handle for s in await my_sessions(request)])

    async def everywhere(request: Request) -> Response:
        return JSONResponse(await logout_everywhere(request, keep_current=True))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.close()

    return Starlette(
        routes=[
            Route("/", show),
            Route("/add", add),
            Route("/theme", theme),
            Route("/login", sign_in),
            Route("/logout", sign_out),
            Route("/devices", devices),
            Route("/everywhere", everywhere),
        ],
        middleware=[Middleware(SessionMiddleware, client=client, options=options)],
        lifespan=lifespan,
    )


MakeBrowser = Callable[..., TestClient]


@pytest.fixture
def browser(store: InProcessStore) -> Iterator[MakeBrowser]:
    """browser() -> a TestClient on a fresh app instance (its own AsyncSessionClient), same store."""
    with contextlib.ExitStack() as stack:

        def make(
            client: AsyncSessionClient | None = None, options: SessionOptions | None = None
        ) -> TestClient:
            client = client or AsyncSessionClient([store.endpoint], insecure=True)
            return stack.enter_context(TestClient(make_app(client, options), base_url=BASE_URL))

        yield make


def plant(client: TestClient, token: str) -> None:
    """Put `token` in the browser's jar as the only session cookie (as the server would set it).

    http.cookiejar files a dotless host's cookies under "<host>.local"; planting under any
    other domain would leave two cookies of one name in the jar.
    """
    client.cookies.clear()
    client.cookies.set(COOKIE, token, domain="testserver.local")


def set_cookies(response: Any) -> list[str]:
    return list(response.headers.get_list("set-cookie"))


def test_asgi_first_write_sets_a_cookie_with_every_secure_default(browser: MakeBrowser) -> None:
    response = browser().get("/add", params={"item": "apple"})
    assert response.json() == ["apple"]
    assert_secure_cookie(set_cookies(response))
    assert response.headers["cache-control"] == "no-store"
    assert "cookie" in response.headers["vary"].lower()


def test_asgi_request_without_cookie_or_write_costs_no_session(
    browser: MakeBrowser, store: InProcessStore
) -> None:
    response = browser().get("/")
    assert response.json() == {"data": {}, "principal": None}
    assert set_cookies(response) == []
    assert "cache-control" not in response.headers
    assert store.session_count() == 0


def test_asgi_planted_unknown_cookie_is_never_adopted(browser: MakeBrowser, store: InProcessStore) -> None:
    client = browser()
    planted = "A" * 43
    plant(client, planted)
    assert_cleared(set_cookies(client.get("/")))  # named no session: dropped, nothing created
    plant(client, planted)
    issued = assert_secure_cookie(set_cookies(client.get("/add", params={"item": "x"})))
    assert issued != planted
    assert store.session_count() == 1


def test_asgi_login_rotates_token_keeps_cart_and_fixed_token_dies(browser: MakeBrowser) -> None:
    attacker, victim = browser(), browser()
    attacker.get("/add", params={"item": "bait"})
    fixed = attacker.cookies[COOKIE]
    plant(victim, fixed)  # the attacker plants its own live session in the victim's browser
    victim.get("/add", params={"item": "apple"})
    response = victim.get("/login", params={"user": "alice"})
    after = assert_secure_cookie(set_cookies(response))
    assert after != fixed
    assert victim.get("/").json() == {"data": {"cart": ["bait", "apple"]}, "principal": "alice"}
    attacker_view = attacker.get("/")
    assert attacker_view.json() == {"data": {}, "principal": None}  # the old token opens nothing
    assert_cleared(set_cookies(attacker_view))


def test_asgi_remember_me_sets_a_persistent_cookie_within_the_absolute_lifetime(browser: MakeBrowser) -> None:
    response = browser().get("/login", params={"user": "alice", "remember": "1"})
    assert_secure_cookie(set_cookies(response), persistent=True)
    max_age = int(response.headers["set-cookie"].split("Max-Age=")[1].split(";")[0])
    assert 0 < max_age <= SessionOptions().absolute_timeout_s


def test_asgi_logout_clears_cookie_and_site_data_and_ends_session_on_a_second_app(
    browser: MakeBrowser,
) -> None:
    server_a, server_b = browser(), browser()
    server_a.get("/add", params={"item": "apple"})
    server_a.get("/login", params={"user": "alice"})
    plant(server_b, server_a.cookies[COOKIE])
    assert server_b.get("/").json()["principal"] == "alice"
    response = server_a.get("/logout")
    assert_cleared(set_cookies(response))
    assert response.headers["clear-site-data"] == '"cookies"'
    assert response.headers["cache-control"] == "no-store"
    assert server_b.get("/").json() == {"data": {}, "principal": None}


def test_asgi_expired_session_gives_a_fresh_anonymous_one(
    browser: MakeBrowser, store: InProcessStore
) -> None:
    client = browser()
    client.get("/login", params={"user": "alice"})
    old = client.cookies[COOKIE]
    store.advance(SessionOptions().idle_timeout_s + 1)
    response = client.get("/")
    assert response.json() == {"data": {}, "principal": None}
    assert_cleared(set_cookies(response))
    new = assert_secure_cookie(set_cookies(client.get("/add", params={"item": "x"})))
    assert new != old


def test_asgi_sends_only_changed_attributes_and_nothing_for_reads(
    browser: MakeBrowser,
    store: InProcessStore,
) -> None:
    recording = RecordingClient([store.endpoint], insecure=True)
    client = browser(recording)
    client.get("/add", params={"item": "apple"})  # created with the cart
    client.get("/theme", params={"theme": "dark"})
    client.get("/")
    client.get("/add", params={"item": "pear"})
    sent = [(sorted(u["set"]), u["delete"]) for u in recording.updates]
    assert sent == [(["theme"], []), (["cart"], [])]
    assert all(u["expected_version"] is not None for u in recording.updates)
    assert set_cookies(client.get("/")) == []  # an unchanged session sets no cookie


def test_asgi_devices_and_logout_everywhere_keep_the_current_session(browser: MakeBrowser) -> None:
    laptop, phone = browser(), browser()
    laptop.get("/login", params={"user": "alice"})
    phone.get("/login", params={"user": "alice"})
    assert len(laptop.get("/devices").json()) == 2
    ended = laptop.get("/everywhere").json()
    assert len(ended) == 1
    assert phone.get("/").json()["principal"] is None
    assert laptop.get("/").json()["principal"] == "alice"


def test_asgi_autoload_off_loads_only_on_request(store: InProcessStore) -> None:
    client = AsyncSessionClient([store.endpoint], insecure=True)

    async def lazy(request: Request) -> Response:
        if request.query_params.get("load") != "1":
            with pytest.raises(SessionNotLoaded):
                request.session.get("n")
            return Response("untouched")
        session = await load_session(request)
        session["n"] = session.get("n", 0) + 1
        return JSONResponse(session["n"])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.close()

    app = Starlette(
        routes=[Route("/", lazy)],
        middleware=[Middleware(SessionMiddleware, client=client, autoload=False)],
        lifespan=lifespan,
    )
    with TestClient(app, base_url=BASE_URL) as browser:
        assert browser.get("/", params={"load": "1"}).json() == 1
        assert browser.get("/").text == "untouched"
        assert browser.get("/", params={"load": "1"}).json() == 2

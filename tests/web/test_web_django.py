"""sessionquorum.web.django with Django's test Client, against the in-process store.

Django is configured here, minimally (no database: nothing here needs one). The views do
what django.contrib.auth's login() does to a session: cycle_key(), then the user's id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import django
import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, override_settings
from django.urls import path

from sessionquorum.client import SessionClient
from sessionquorum.web.django import AUTH_USER_KEY, SessionStore
from tests.web.checks import COOKIE, assert_cleared, assert_secure_cookie
from tests.web.inprocess_store import InProcessStore

if not settings.configured:
    settings.configure(
        SECRET_KEY="tests-only",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["testserver"],
        MIDDLEWARE=["sessionquorum.web.django.SessionMiddleware"],
        SESSION_ENGINE="sessionquorum.web.django",
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()


def _session(request: HttpRequest) -> SessionStore:
    session = request.session
    assert isinstance(session, SessionStore)
    return session


def show(request: HttpRequest) -> HttpResponse:
    session = _session(request)
    data = {k: v for k, v in session.items() if k != AUTH_USER_KEY}
    return JsonResponse({"data": data, "user": session.get(AUTH_USER_KEY)})


def add(request: HttpRequest) -> HttpResponse:
    cart = request.session.get("cart", [])
    request.session["cart"] = [*cart, request.GET["item"]]
    return JsonResponse(request.session["cart"], safe=False)


def login(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key()  # as django.contrib.auth.login does
    request.session[AUTH_USER_KEY] = request.GET["user"]
    if request.GET.get("remember") == "1":
        request.session.set_expiry(3600)
    return HttpResponse("welcome")


def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()  # as django.contrib.auth.logout does
    return HttpResponse("bye")


def shorten(request: HttpRequest) -> HttpResponse:
    request.session.set_expiry(int(request.GET["seconds"]))  # on an existing session
    return HttpResponse("shortened")


def devices(request: HttpRequest) -> HttpResponse:
    return JsonResponse([s.handle for s in _session(request).my_sessions()], safe=False)


urlpatterns = [
    path("", show),
    path("add", add),
    path("login", login),
    path("logout", logout),
    path("devices", devices),
    path("shorten", shorten),
]

MakeBrowser = Callable[[], Client]


@pytest.fixture
def browser(store: InProcessStore) -> Iterator[MakeBrowser]:
    """browser() -> a Django test Client; every "app instance" shares SESSIONQUORUM_CLIENT's store."""
    client = SessionClient([store.endpoint], insecure=True)
    with override_settings(SESSIONQUORUM_CLIENT=client):
        yield lambda: Client(HTTP_HOST="testserver")
    client.close()


def get(browser: Client, url: str, **params: str) -> Any:
    return browser.get(url, params, secure=True)


def set_cookies(response: Any) -> list[str]:
    return [morsel.OutputString() for morsel in response.cookies.values()]


def test_django_first_write_sets_a_cookie_with_every_secure_default(browser: MakeBrowser) -> None:
    response = get(browser(), "/add", item="apple")
    assert response.json() == ["apple"]
    assert_secure_cookie(set_cookies(response))
    assert response["Cache-Control"] == "no-store"
    assert "Cookie" in response["Vary"]


def test_django_request_without_cookie_or_write_costs_no_session(
    browser: MakeBrowser, store: InProcessStore
) -> None:
    response = get(browser(), "/")
    assert response.json() == {"data": {}, "user": None}
    assert set_cookies(response) == []
    assert store.session_count() == 0


def test_django_planted_unknown_cookie_is_never_adopted(browser: MakeBrowser) -> None:
    client = browser()
    planted = "C" * 43
    client.cookies[COOKIE] = planted
    assert_cleared(set_cookies(get(client, "/")))
    client.cookies[COOKIE] = planted
    assert assert_secure_cookie(set_cookies(get(client, "/add", item="x"))) != planted


def test_django_cycle_key_at_login_rotates_token_keeps_cart_and_binds_the_user(
    browser: MakeBrowser, store: InProcessStore
) -> None:
    attacker, victim = browser(), browser()
    get(attacker, "/add", item="bait")
    fixed = attacker.cookies[COOKIE].value
    victim.cookies[COOKIE] = fixed
    get(victim, "/add", item="apple")
    after = assert_secure_cookie(set_cookies(get(victim, "/login", user="alice")))
    assert after != fixed
    assert get(victim, "/").json() == {"data": {"cart": ["bait", "apple"]}, "user": "alice"}
    assert get(attacker, "/").json() == {"data": {}, "user": None}
    assert len(get(victim, "/devices").json()) == 1  # bound to principal "alice" in the same rotate
    assert store.session_count() == 1


def test_django_set_expiry_at_login_gives_a_persistent_cookie(browser: MakeBrowser) -> None:
    response = get(browser(), "/login", user="alice", remember="1")
    assert_secure_cookie(set_cookies(response), persistent=True)
    assert response.cookies[COOKIE]["max-age"] == 3600


def test_django_flush_clears_cookie_and_site_data_and_ends_session_on_a_second_app(
    browser: MakeBrowser,
) -> None:
    server_a, server_b = browser(), browser()
    get(server_a, "/login", user="alice")
    server_b.cookies[COOKIE] = server_a.cookies[COOKIE].value
    assert get(server_b, "/").json()["user"] == "alice"
    response = get(server_a, "/logout")
    assert_cleared(set_cookies(response))
    assert response["Clear-Site-Data"] == '"cookies"'
    assert response["Cache-Control"] == "no-store"
    assert get(server_b, "/").json() == {"data": {}, "user": None}


def test_django_expired_session_gives_a_fresh_anonymous_one(
    browser: MakeBrowser, store: InProcessStore
) -> None:
    client = browser()
    get(client, "/login", user="alice")
    store.advance(31 * 60)
    response = get(client, "/")
    assert response.json() == {"data": {}, "user": None}
    assert_cleared(set_cookies(response))


def test_django_engine_exists_and_delete(browser: MakeBrowser) -> None:
    client = browser()
    get(client, "/add", item="apple")
    key = client.cookies[COOKIE].value
    engine = SessionStore()
    assert engine.exists(key)
    engine.delete(key)
    assert not engine.exists(key)
    assert not engine.exists("not-a-token")


def test_django_engine_under_djangos_own_middleware_ignores_junk_keys_and_works(browser: MakeBrowser) -> None:
    with override_settings(MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"]):
        client = browser()
        client.cookies["sessionid"] = "x" * 300  # the raw cookie reaches the engine here
        assert get(client, "/").json() == {"data": {}, "user": None}
        assert get(client, "/add", item="apple").json() == ["apple"]
        key = client.cookies["sessionid"].value
        assert len(key) == 43
        assert get(client, "/").json()["data"] == {"cart": ["apple"]}


def test_django_set_expiry_on_an_existing_session_changes_its_idle_timeout_in_the_store(
    browser: MakeBrowser, store: InProcessStore
) -> None:
    client = browser()
    get(client, "/login", user="alice")
    get(client, "/shorten", seconds="120")
    store.advance(119)
    assert get(client, "/").json()["user"] == "alice"  # each request is an access
    store.advance(121)  # idle longer than the new 2 minutes, far less than the default 30
    assert get(client, "/").json() == {"data": {}, "user": None}

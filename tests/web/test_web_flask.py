"""sessionquorum.web.flask with Flask's test client, against the in-process store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import flask
import pytest
from flask.testing import FlaskClient

from sessionquorum.client import SessionClient
from sessionquorum.web.flask import QuorumSession, QuorumSessionInterface
from tests.web.checks import COOKIE, assert_cleared, assert_secure_cookie
from tests.web.inprocess_store import InProcessStore

BASE_URL = "https://localhost"


def make_app(client: SessionClient) -> flask.Flask:
    app = flask.Flask(__name__)
    app.session_interface = QuorumSessionInterface(client)

    def current() -> QuorumSession:
        session = flask.session
        assert isinstance(session, QuorumSession)
        return session

    @app.get("/")
    def show() -> Any:
        return {"data": dict(flask.session), "principal": current().principal}

    @app.get("/add")
    def add() -> Any:
        flask.session.setdefault("cart", []).append(flask.request.args["item"])
        return flask.session["cart"]

    @app.get("/login")
    def login() -> Any:
        current().login(flask.request.args["user"], remember=flask.request.args.get("remember") == "1")
        return "welcome"

    @app.get("/permanent")
    def permanent() -> Any:
        flask.session.permanent = True
        return "remembered"

    @app.get("/regenerate")
    def regenerate() -> Any:
        current().regenerate()
        return "new token"

    @app.get("/logout")
    def logout() -> Any:
        current().logout()
        return "bye"

    @app.get("/devices")
    def devices() -> Any:
        return [s.handle for s in current().my_sessions()]

    return app


MakeBrowser = Callable[[], FlaskClient]


@pytest.fixture
def browser(store: InProcessStore) -> Iterator[MakeBrowser]:
    """browser() -> a test client of a fresh app instance (its own SessionClient), same store."""
    clients: list[SessionClient] = []

    def make() -> FlaskClient:
        client = SessionClient([store.endpoint], insecure=True)
        clients.append(client)
        return make_app(client).test_client()

    yield make
    for client in clients:
        client.close()


def get(browser: FlaskClient, path: str, **params: str) -> Any:
    return browser.get(path, query_string=params, base_url=BASE_URL)


def set_cookies(response: Any) -> list[str]:
    return list(response.headers.getlist("Set-Cookie"))


def token(browser: FlaskClient) -> str:
    cookie = browser.get_cookie(COOKIE)
    assert cookie is not None
    return cookie.value


def test_flask_first_write_sets_a_cookie_with_every_secure_default(browser: MakeBrowser) -> None:
    response = get(browser(), "/add", item="apple")
    assert response.json == ["apple"]
    assert_secure_cookie(set_cookies(response))
    assert response.headers["Cache-Control"] == "no-store"
    assert "Cookie" in response.headers["Vary"]


def test_flask_request_without_cookie_or_write_costs_no_session(
    browser: MakeBrowser, store: InProcessStore
) -> None:
    response = get(browser(), "/")
    assert response.json == {"data": {}, "principal": None}
    assert set_cookies(response) == []
    assert store.session_count() == 0


def test_flask_planted_unknown_cookie_is_never_adopted(browser: MakeBrowser) -> None:
    client = browser()
    planted = "B" * 43
    client.set_cookie(COOKIE, planted)
    assert_cleared(set_cookies(get(client, "/")))
    client.set_cookie(COOKIE, planted)
    assert assert_secure_cookie(set_cookies(get(client, "/add", item="x"))) != planted


def test_flask_login_rotates_token_keeps_cart_and_fixed_token_dies(browser: MakeBrowser) -> None:
    attacker, victim = browser(), browser()
    get(attacker, "/add", item="bait")
    fixed = token(attacker)
    victim.set_cookie(COOKIE, fixed)
    get(victim, "/add", item="apple")
    after = assert_secure_cookie(set_cookies(get(victim, "/login", user="alice")))
    assert after != fixed
    assert get(victim, "/").json == {"data": {"cart": ["bait", "apple"]}, "principal": "alice"}
    assert get(attacker, "/").json == {"data": {}, "principal": None}


def test_flask_regenerate_changes_the_token_and_keeps_data(browser: MakeBrowser) -> None:
    client = browser()
    get(client, "/add", item="apple")
    before = token(client)
    after = assert_secure_cookie(set_cookies(get(client, "/regenerate")))
    assert after != before
    assert get(client, "/").json["data"] == {"cart": ["apple"]}


def test_flask_permanent_session_gets_a_persistent_cookie_refreshed_each_request(
    browser: MakeBrowser,
) -> None:
    client = browser()
    get(client, "/add", item="apple")
    assert_secure_cookie(set_cookies(get(client, "/permanent")), persistent=True)
    # SESSION_REFRESH_EACH_REQUEST (Flask's default): the persistent cookie is sent again.
    assert_secure_cookie(set_cookies(get(client, "/")), persistent=True)
    assert get(client, "/").json["data"] == {"cart": ["apple"]}  # the flag is not an attribute


def test_flask_logout_clears_cookie_and_site_data_and_ends_session_on_a_second_app(
    browser: MakeBrowser,
) -> None:
    server_a, server_b = browser(), browser()
    get(server_a, "/login", user="alice")
    server_b.set_cookie(COOKIE, token(server_a))
    assert get(server_b, "/").json["principal"] == "alice"
    response = get(server_a, "/logout")
    assert_cleared(set_cookies(response))
    assert response.headers["Clear-Site-Data"] == '"cookies"'
    assert response.headers["Cache-Control"] == "no-store"
    assert get(server_b, "/").json == {"data": {}, "principal": None}


def test_flask_expired_session_gives_a_fresh_anonymous_one(
    browser: MakeBrowser, store: InProcessStore
) -> None:
    client = browser()
    get(client, "/login", user="alice")
    store.advance(31 * 60)
    response = get(client, "/")
    assert response.json == {"data": {}, "principal": None}
    assert_cleared(set_cookies(response))


def test_flask_devices_lists_the_principals_sessions(browser: MakeBrowser) -> None:
    laptop, phone = browser(), browser()
    get(laptop, "/login", user="alice")
    get(phone, "/login", user="alice")
    assert len(get(phone, "/devices").json) == 2


class RecordingClient(SessionClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.touches: list[bool] = []

    def validate(self, token: str, **kwargs: Any) -> Any:
        self.touches.append(kwargs.get("touch", False))
        return super().validate(token, **kwargs)


@pytest.mark.parametrize("refresh", [True, False])
def test_flask_refresh_each_request_is_a_touch_on_load(store: InProcessStore, refresh: bool) -> None:
    client = RecordingClient([store.endpoint], insecure=True)
    try:
        app = make_app(client)
        app.config["SESSION_REFRESH_EACH_REQUEST"] = refresh
        browser = app.test_client()
        get(browser, "/add", item="apple")  # no cookie yet: nothing to validate
        assert get(browser, "/").json["data"] == {"cart": ["apple"]}
        assert client.touches == [refresh]
    finally:
        client.close()

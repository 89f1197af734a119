"""The shop example (examples/shop/) with Starlette's TestClient, on the in-process store.

The same walk as the issue's browser test, minus the browser and the leader kill (those
need real processes): two app servers, one shopper, a cart that survives the login.
"""

from __future__ import annotations

import contextlib

from starlette.testclient import TestClient

from examples.shop.app import create_app
from sessionquorum.client import AsyncSessionClient
from tests.web.checks import COOKIE
from tests.web.inprocess_store import InProcessStore
from tests.web.test_web_asgi import BASE_URL, plant


def test_shop_cart_crosses_app_servers_survives_login_and_checkout(store: InProcessStore) -> None:
    with contextlib.ExitStack() as stack:

        def server(name: str) -> TestClient:
            app = create_app(AsyncSessionClient([store.endpoint], insecure=True), name=name)
            return stack.enter_context(TestClient(app, base_url=BASE_URL))

        server_a, server_b, phone = server("A"), server("B"), server("A")
        server_a.post("/cart/add", data={"product": "tea"})
        anonymous = server_a.cookies[COOKIE]
        plant(server_b, anonymous)
        server_b.post("/cart/add", data={"product": "mug"})
        assert "cart (2)" in server_b.get("/").text

        server_b.post("/login", data={"name": "alice"})
        assert server_b.cookies[COOKIE] != anonymous
        cart = server_b.get("/cart").text
        assert "Green tea" in cart and "Blue mug" in cart and "signed in as <b>alice</b>" in cart

        phone.post("/login", data={"name": "alice"})
        devices = server_b.get("/devices").text
        assert devices.count("class='revoke'") == 2
        other = devices.split("another device")[1].split("name='handle' value='")[1].split("'")[0]
        server_b.post("/devices", data={"handle": other})
        assert "log in" in phone.get("/").text  # the phone's session was revoked

        assert "Order of 2 item(s) placed." in server_b.post("/checkout").text
        bye = server_b.post("/logout")
        assert bye.headers["clear-site-data"] == '"cookies"'
        assert "cart (0)" in server_b.get("/").text

"""sessionquorum.web.asgi on a real 3-node cluster (TLS): two app servers, one shopper, a leader kill -9.

The unit tests (tests/web/) prove each cookie rule on the in-process store; this one proves
the middleware on the real thing: the cart written through app server A is read through
B, survives the Raft leader's death mid-session, survives the login rotation, and a
logout on one app server is effective on the other at once.
"""

from __future__ import annotations

import contextlib

import pytest
from starlette.testclient import TestClient

from sessionquorum.client import AsyncSessionClient, TLSConfig
from sessionquorum.cluster import LocalCluster
from tests.web.checks import COOKIE, assert_cleared, assert_secure_cookie
from tests.web.test_web_asgi import BASE_URL, make_app, plant, set_cookies

from .conftest import LEADER_TIMEOUT_S, ClusterFactory

pytestmark = pytest.mark.cluster


def _client(cluster: LocalCluster) -> AsyncSessionClient:
    tls = cluster.tls_files
    return AsyncSessionClient(cluster.endpoints, tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key))


def test_web_asgi_cart_survives_app_server_switch_leader_kill_and_login(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    with contextlib.ExitStack() as stack:
        server_a = stack.enter_context(TestClient(make_app(_client(cluster)), base_url=BASE_URL))
        server_b = stack.enter_context(TestClient(make_app(_client(cluster)), base_url=BASE_URL))
        first = server_a.get("/add", params={"item": "apple"})
        token = assert_secure_cookie(set_cookies(first))
        plant(server_b, token)
        assert server_b.get("/add", params={"item": "pear"}).json() == ["apple", "pear"]

        leader = cluster.wait_for_leader(LEADER_TIMEOUT_S)
        cluster.kill(leader)
        assert server_b.get("/add", params={"item": "plum"}).json() == ["apple", "pear", "plum"]
        cluster.wait_for_new_leader(leader, LEADER_TIMEOUT_S)

        plant(server_a, token)
        login = server_a.get("/login", params={"user": "alice"})
        rotated = assert_secure_cookie(set_cookies(login))
        assert rotated != token
        assert server_a.get("/").json() == {"data": {"cart": ["apple", "pear", "plum"]}, "principal": "alice"}
        assert server_b.get("/").json() == {"data": {}, "principal": None}  # the old token opens nothing

        plant(server_b, rotated)
        assert server_b.get("/").json()["principal"] == "alice"
        assert_cleared(set_cookies(server_b.get("/logout")))
        assert server_a.get("/").json() == {"data": {}, "principal": None}
    assert COOKIE not in server_a.cookies

"""The framework-free core of sessionquorum.web: cookie policy, change tracking, headers. No I/O."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

import sessionquorum.web
from sessionquorum.client import Session
from sessionquorum.web import ConfigurationError, CookiePolicy, JSONSerializer, SessionData, SessionNotLoaded
from sessionquorum.web._state import Cookie
from tests.web.checks import assert_cleared, assert_secure_cookie

TOKEN = "t" * 43


def session(attributes: dict[str, bytes], version: int = 1) -> Session:
    return Session(
        handle="h1",
        principal=None,
        attributes=attributes,
        created_ms=0,
        last_access_ms=1_000,
        idle_timeout_ms=1_800_000,
        absolute_deadline_ms=1_000 + 8 * 3600 * 1000,
        version=version,
    )


def loaded(attributes: dict[str, bytes]) -> SessionData:
    data = SessionData(JSONSerializer(), presented=True)
    data.adopt(session(attributes), TOKEN)
    return data


def test_web_all_is_complete() -> None:
    # Submodules (asgi, flask, django) are attributes once imported; they are not re-exported.
    public = {
        name
        for name, value in vars(sessionquorum.web).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(sessionquorum.web.__all__) == public


def test_cookie_policy_defaults_are_host_prefixed_secure_httponly_lax_and_session_only() -> None:
    policy = CookiePolicy()
    assert policy.cookie_name == "__Host-session"
    assert assert_secure_cookie([policy.set_cookie(TOKEN, None)]) == TOKEN
    assert_secure_cookie([policy.set_cookie(TOKEN, 60)], persistent=True)
    assert_cleared([policy.clear_cookie()])


def test_cookie_policy_refuses_samesite_none_and_odd_names() -> None:
    with pytest.raises(ConfigurationError):
        CookiePolicy(same_site="None")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        CookiePolicy(name="a;b")


def test_cookie_policy_without_secure_drops_the_host_prefix() -> None:
    policy = CookiePolicy(secure=False)
    assert policy.cookie_name == "session"
    assert "Secure" not in policy.set_cookie(TOKEN, None)


@pytest.mark.parametrize("value", ["", "short", "x" * 44, "é" * 43, "a b" + "c" * 40])
def test_cookie_token_from_ignores_values_we_cannot_have_issued(value: str) -> None:
    assert CookiePolicy().token_from({"__Host-session": value}) is None


def test_cookie_token_from_ignores_the_unprefixed_name() -> None:
    # A sibling subdomain can set "session" but not "__Host-session".
    assert CookiePolicy().token_from({"session": TOKEN}) is None
    assert CookiePolicy().token_from({"__Host-session": TOKEN}) == TOKEN


def test_remember_max_age_never_passes_the_absolute_deadline() -> None:
    policy = CookiePolicy(remember_max_age_s=10**9)
    assert policy.remember_max_age(absolute_deadline_ms=61_000, now_ms=1_000) == 60
    assert CookiePolicy(remember_max_age_s=5).remember_max_age(absolute_deadline_ms=61_000, now_ms=1_000) == 5


def test_changes_find_nested_mutation_and_deletion_and_ignore_reads() -> None:
    data = loaded({"cart": b"[1]", "theme": b'"dark"', "gone": b"1"})
    assert data["theme"] == "dark"
    assert data.changes() == ({}, [])
    data["cart"].append(2)
    del data["gone"]
    assert data.changes() == ({"cart": b"[1,2]"}, ["gone"])


def test_changes_never_delete_an_attribute_that_does_not_deserialize() -> None:
    data = loaded({"raw": b"\x80not json", "cart": b"[]"})
    assert "raw" not in data
    data["cart"] = [1]
    assert data.changes() == ({"cart": b"[1]"}, [])


def test_internal_attributes_are_hidden_and_reserved() -> None:
    data = loaded({"_sq.remember": b"1", "cart": b"[]"})
    assert list(data) == ["cart"]
    assert data.remember
    with pytest.raises(KeyError):
        data["_sq.remember"] = "0"


def test_repr_shows_keys_never_values() -> None:
    data = loaded({"csrf": b'"secret-value"'})
    assert "secret-value" not in repr(data)
    assert "csrf" in repr(data)


def test_explicit_load_refuses_use_before_load() -> None:
    data = SessionData(JSONSerializer(), presented=True, explicit_load=True)
    with pytest.raises(SessionNotLoaded):
        data["cart"]


def test_lazy_loader_runs_once_at_first_access() -> None:
    calls: list[int] = []
    data: Any = None

    def loader() -> None:
        calls.append(1)
        data.adopt(session({"cart": b"[1]"}), TOKEN)

    data = SessionData(JSONSerializer(), presented=True, loader=loader)
    assert calls == []
    assert data["cart"] == [1]
    assert data.get("cart") == [1]
    assert calls == [1]


def test_headers_for_a_new_token_logout_and_stale_cookie() -> None:
    policy = CookiePolicy()
    data = loaded({})
    data.issued(session({}), TOKEN)
    headers = dict(data.cookie_headers(policy))
    assert headers["Cache-Control"] == "no-store"
    assert_secure_cookie([headers["Set-Cookie"]])
    data.ended()
    headers = dict(data.cookie_headers(policy))
    assert headers["Clear-Site-Data"] == '"cookies"'
    assert_cleared([headers["Set-Cookie"]])
    stale = SessionData(JSONSerializer(), presented=True)
    stale.adopt(None, None)
    stale.forget_stale_cookie()
    assert stale.cookie is Cookie.CLEAR
    assert "Clear-Site-Data" not in dict(stale.cookie_headers(policy))


def test_unchanged_session_sends_no_cookie_header() -> None:
    data = loaded({"cart": b"[]"})
    data["cart"]
    assert dict(data.cookie_headers(CookiePolicy())) == {"Vary": "Cookie"}


def test_clear_site_data_can_be_turned_off() -> None:
    data = loaded({})
    data.ended()
    headers = dict(data.cookie_headers(CookiePolicy(clear_site_data=False)))
    assert "Clear-Site-Data" not in headers
    assert_cleared([headers["Set-Cookie"]])


@pytest.mark.parametrize("name", ["asgi", "flask", "django"])
def test_adapter_all_lists_its_public_names(name: str) -> None:
    module = importlib.import_module(f"sessionquorum.web.{name}")
    public = {
        n
        for n, value in vars(module).items()
        if not n.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }
    assert public <= set(module.__all__)

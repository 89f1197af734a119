"""Assertions shared by the three framework backends' tests (tests/unit/test_web_*.py)."""

from __future__ import annotations

COOKIE = "__Host-session"


def cookie_attributes(set_cookie: str) -> tuple[str, str, dict[str, str]]:
    """(name, value, {attribute lowercased: value}) of one Set-Cookie header value."""
    first, *rest = [part.strip() for part in set_cookie.split(";")]
    name, _, value = first.partition("=")
    attributes: dict[str, str] = {}
    for part in rest:
        key, _, val = part.partition("=")
        attributes[key.lower()] = val
    return name, value.strip('"'), attributes


def session_cookie(set_cookies: list[str]) -> tuple[str, dict[str, str]]:
    """The one Set-Cookie of the session cookie: (value, attributes)."""
    ours = [c for c in set_cookies if c.startswith(COOKIE + "=")]
    assert len(ours) == 1, f"expected one Set-Cookie for {COOKIE}, got {set_cookies}"
    _, value, attributes = cookie_attributes(ours[0])
    return value, attributes


def assert_secure_cookie(set_cookies: list[str], *, persistent: bool = False) -> str:
    """Every default of the cookie policy; returns the token it sets."""
    value, attributes = session_cookie(set_cookies)
    assert len(value) == 43, "a token from the client library (256 bits, URL-safe base64)"
    assert "secure" in attributes
    assert "httponly" in attributes
    assert attributes.get("samesite", "").lower() == "lax"
    assert attributes.get("path") == "/"
    assert "domain" not in attributes
    if persistent:
        assert int(attributes["max-age"]) > 0
    else:
        assert "max-age" not in attributes and "expires" not in attributes, "a browser-session cookie"
    return value


def assert_cleared(set_cookies: list[str]) -> None:
    value, attributes = session_cookie(set_cookies)
    assert value == ""
    assert attributes.get("max-age") == "0" or "1970" in attributes.get("expires", "")
    assert attributes.get("path") == "/"

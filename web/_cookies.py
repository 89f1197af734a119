"""The session cookie: its name and attributes, and the headers that go with setting it.

Defaults follow the OWASP cheat sheet and ASVS 5 (3.3.x, 14.2.1, 14.3.1): a `__Host-`
name (the browser then insists on Secure, Path=/ and no Domain, so a sibling subdomain
cannot plant or overwrite it), HttpOnly, SameSite=Lax, and no Max-Age unless the user
asked to be remembered. Whatever sets or clears the cookie also sends
`Cache-Control: no-store`, so no shared cache keeps a response that carries a token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ._errors import ConfigurationError

HOST_PREFIX = "__Host-"
NO_STORE = ("Cache-Control", "no-store")
CLEAR_SITE_DATA = ("Clear-Site-Data", '"cookies"')
VARY_COOKIE = ("Vary", "Cookie")
# The client's tokens are secrets.token_urlsafe(32): 43 URL-safe characters. Anything
# else in the cookie was not issued by us, so it is never sent to the store.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_SAME_SITE = ("Lax", "Strict")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def is_token(value: str) -> bool:
    """Whether `value` has the shape of a token the client library makes (else it was not ours)."""
    return _TOKEN.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """How the session cookie is named and flagged.

    `name` is prefixed with `__Host-`. `secure=False` exists for plain-HTTP development
    only: browsers refuse a `__Host-` cookie without Secure, so the prefix goes with it.
    There is no `domain` and no `path` on purpose (see web/DESIGN.md).
    """

    name: str = "session"
    secure: bool = True
    same_site: Literal["Lax", "Strict"] = "Lax"
    # The longest Max-Age of a remembered (persistent) cookie; never beyond the session's
    # absolute deadline either (`remember_max_age_s`).
    remember_max_age_s: int = 30 * 24 * 3600
    # `Clear-Site-Data: "cookies"` on logout drops every cookie of the origin, not only ours
    # (OWASP asks for it); an application that must keep other cookies turns it off.
    clear_site_data: bool = True

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigurationError(f"cookie name must be 1-64 of [A-Za-z0-9_.-], got {self.name!r}")
        if self.same_site not in _SAME_SITE:
            # SameSite=None would send the token on cross-site requests (CSRF).
            raise ConfigurationError(f"same_site must be one of {_SAME_SITE}, got {self.same_site!r}")
        if self.remember_max_age_s < 1:
            raise ConfigurationError("remember_max_age_s must be at least 1")

    @property
    def cookie_name(self) -> str:
        return HOST_PREFIX + self.name if self.secure else self.name

    def token_from(self, cookies: Mapping[str, str]) -> str | None:
        """The token in the request's cookies, or None when absent or not one we could have issued."""
        value = cookies.get(self.cookie_name)
        return value if value is not None and is_token(value) else None

    def set_cookie(self, token: str, max_age_s: int | None) -> str:
        """A Set-Cookie value; `max_age_s=None` makes a browser-session cookie."""
        return self._format(token, "" if max_age_s is None else f"; Max-Age={max(0, max_age_s)}")

    def clear_cookie(self) -> str:
        """A Set-Cookie value that makes the browser drop the cookie at once."""
        return self._format("", "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT")

    def remember_max_age(self, absolute_deadline_ms: int, now_ms: int) -> int:
        """A remembered cookie's Max-Age: the configured cap, or less if the session ends sooner."""
        remaining_s = max(0, (absolute_deadline_ms - now_ms) // 1000)
        return min(self.remember_max_age_s, remaining_s)

    def _format(self, value: str, lifetime: str) -> str:
        secure = "; Secure" if self.secure else ""
        return f"{self.cookie_name}={value}; Path=/{lifetime}; HttpOnly{secure}; SameSite={self.same_site}"

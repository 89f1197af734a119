"""One request's view of its session: a mapping of decoded values, and what must be written back.

No I/O here. The flows (_flows.py) load it, save it and change its token; the framework
adapters only hand it to the application and turn `cookie_headers` into their response.

Changes are found by comparison, not by watching assignments: at save, each value is
serialized again and compared with the bytes that were loaded. So `session["cart"].append(3)`
is saved like `session["cart"] = [...]`, and a request that only reads sends nothing.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from sessionquorum.client import Session

from ._cookies import CLEAR_SITE_DATA, NO_STORE, VARY_COOKIE, CookiePolicy
from ._errors import SessionNotLoaded
from ._serializers import Serializer

logger = logging.getLogger(__name__)

# Attributes the web layer keeps for itself, hidden from the mapping.
INTERNAL_PREFIX = "_sq."
REMEMBER = INTERNAL_PREFIX + "remember"


class Cookie(enum.Enum):
    KEEP = "keep"  # the browser's cookie (if any) stays as it is
    SET = "set"  # a new token: created, rotated, or a remembered cookie refreshed
    CLEAR = "clear"  # logged out, or the cookie named no live session


class SessionData(MutableMapping[str, Any]):
    """A dict-like session. `loader`, if given, is called once at the first access (lazy load)."""

    def __init__(
        self,
        serializer: Serializer,
        *,
        presented: bool,
        loader: Callable[[], None] | None = None,
        explicit_load: bool = False,
    ) -> None:
        self._serializer = serializer
        self._loader = loader
        self._explicit_load = explicit_load
        self.presented = presented  # the request carried a well-formed session cookie
        self.loaded = False
        self.accessed = False
        self.modified = False
        self.token: str | None = None  # only ever a token the store confirmed, or one it issued
        self.session: Session | None = None  # metadata as last seen (handle, principal, version)
        self.cookie = Cookie.KEEP
        self.clear_site_data = False
        self._values: dict[str, Any] = {}
        self._original: dict[str, bytes] = {}  # what the store holds, as of the last load or write
        self._internal: dict[str, bytes] = {}
        # A new idle timeout for the stored session, sent with the next save (Spring's
        # maxInactiveInterval, Django's set_expiry on an existing session).
        self.idle_timeout_s: float | None = None

    # -- the mapping -------------------------------------------------------------------

    def _data(self) -> dict[str, Any]:
        self.accessed = True
        if not self.loaded:
            if self._loader is not None:
                self._loader()
            elif self._explicit_load:
                raise SessionNotLoaded("call `await load_session(request)` before using request.session")
            else:
                self.loaded = True
        return self._values

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key.startswith(INTERNAL_PREFIX):
            raise KeyError(f"attribute names starting with {INTERNAL_PREFIX!r} are reserved")
        self._data()[key] = value
        self.modified = True

    def __delitem__(self, key: str) -> None:
        del self._data()[key]
        self.modified = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __repr__(self) -> str:
        # Values stay out: sessions hold CSRF tokens and the like, and reprs reach logs.
        keys = sorted(self._values) if self.loaded else "not loaded"
        return f"<{type(self).__name__} handle={self.handle!r} keys={keys}>"

    # -- what the application may ask -----------------------------------------------------

    @property
    def handle(self) -> str | None:
        """The session's non-secret handle (compare with `my_sessions()`), None when anonymous."""
        return self.session.handle if self.session is not None else None

    @property
    def principal(self) -> str | None:
        return self.session.principal if self.session is not None else None

    @property
    def remember(self) -> bool:
        return self._internal.get(REMEMBER) == b"1"

    @remember.setter
    def remember(self, value: bool) -> None:
        if value:
            self._internal[REMEMBER] = b"1"
        else:
            self._internal.pop(REMEMBER, None)

    # -- used by the flows ---------------------------------------------------------------

    def ensure_loaded(self) -> None:
        self._data()

    def adopt(self, session: Session | None, token: str | None) -> None:
        """Take what the store holds (after a load, or a merge's re-read) as the new base."""
        self.loaded = True
        self.session, self.token = session, token
        attributes = session.attributes if session is not None else {}
        self._original = {}
        self._values = {}
        self._internal = {}
        for name, raw in attributes.items():
            if name.startswith(INTERNAL_PREFIX):
                self._internal[name] = raw
                self._original[name] = raw
                continue
            try:
                self._values[name] = self._serializer.loads(raw)
            except ValueError:
                # Not ours to judge (another application or serializer wrote it): hidden, and
                # left out of the base so that a save never deletes it.
                logger.warning("session attribute %r does not deserialize; ignored", name)
                continue
            self._original[name] = raw

    def changes(self) -> tuple[dict[str, bytes], list[str]]:
        """(attributes to set, names to delete) against the store's last known state."""
        current = {name: self._serializer.dumps(value) for name, value in self._values.items()}
        current.update(self._internal)
        to_set = {name: raw for name, raw in current.items() if self._original.get(name) != raw}
        to_delete = sorted(name for name in self._original if name not in current)
        return to_set, to_delete

    def encoded(self) -> dict[str, bytes]:
        """Every attribute as bytes (for a create)."""
        current = {name: self._serializer.dumps(value) for name, value in self._values.items()}
        current.update(self._internal)
        return current

    def decode(self, raw: bytes) -> Any:
        return self._serializer.loads(raw)

    def encode_value(self, value: Any) -> bytes:
        return self._serializer.dumps(value)

    @property
    def base(self) -> dict[str, bytes]:
        """What the store held at the last load or write (undecodable attributes left out)."""
        return dict(self._original)

    def saved(self, session: Session, token: str, written: dict[str, bytes], deleted: list[str]) -> None:
        """After a successful write: the store now holds `written` and lacks `deleted`."""
        self.session, self.token = session, token
        self.idle_timeout_s = None
        self._original.update(written)
        for name in deleted:
            self._original.pop(name, None)

    def rebase(self, theirs: Session, merged: dict[str, bytes]) -> None:
        """After a merge: the base is what the other request wrote; the view is `merged`."""
        self.adopt(theirs, self.token)
        for name in set(self._original) - set(merged):
            self._values.pop(name, None)
            self._internal.pop(name, None)
        for name, raw in merged.items():
            if theirs.attributes.get(name) == raw:
                continue  # the other request's value, already adopted (or hidden as undecodable)
            if name.startswith(INTERNAL_PREFIX):
                self._internal[name] = raw
            else:
                self._values[name] = self._serializer.loads(raw)

    def issued(self, session: Session, token: str) -> None:
        """A token the browser must get (create or rotate); attributes already in the store."""
        self.session, self.token = session, token
        self._original = self.encoded()
        self.cookie = Cookie.SET

    def rotated(self, session: Session, token: str) -> None:
        """The same session under a new token: the data stays, pending changes stay pending."""
        self.session, self.token = session, token
        self.cookie = Cookie.SET

    def ended(self) -> None:
        """Logged out (or revoked): empty, anonymous, and the browser forgets the cookie."""
        self.loaded = True
        self.session = self.token = None
        self._values, self._original, self._internal = {}, {}, {}
        self.cookie = Cookie.CLEAR
        self.clear_site_data = True
        self.modified = True

    def forget_stale_cookie(self) -> None:
        """The cookie named no live session: unless a new one is issued, tell the browser to drop it."""
        if self.presented and self.session is None and self.cookie is Cookie.KEEP:
            self.cookie = Cookie.CLEAR

    def cookie_decision(
        self, policy: CookiePolicy, *, refresh_remembered: bool = False
    ) -> tuple[Cookie, int | None]:
        """What to do with the browser's cookie: (KEEP | SET | CLEAR, Max-Age for SET or None)."""
        cookie = self.cookie
        if cookie is Cookie.KEEP and refresh_remembered and self.remember and self.session is not None:
            cookie = Cookie.SET  # a remembered cookie sent again with a fresh Max-Age
        if cookie is Cookie.SET and (self.token is None or self.session is None):
            cookie = Cookie.CLEAR
        if cookie is not Cookie.SET or self.session is None or not self.remember:
            return cookie, None
        return cookie, policy.remember_max_age(self.session.absolute_deadline_ms, self.session.last_access_ms)

    def cookie_headers(
        self, policy: CookiePolicy, *, refresh_remembered: bool = False
    ) -> list[tuple[str, str]]:
        """The response headers this session needs (Vary, Set-Cookie, Cache-Control, Clear-Site-Data)."""
        headers: list[tuple[str, str]] = []
        if self.accessed or self.presented:
            headers.append(VARY_COOKIE)
        cookie, max_age = self.cookie_decision(policy, refresh_remembered=refresh_remembered)
        if cookie is Cookie.SET and self.token is not None:
            headers += [("Set-Cookie", policy.set_cookie(self.token, max_age)), NO_STORE]
        elif cookie is Cookie.CLEAR:
            headers += [("Set-Cookie", policy.clear_cookie()), NO_STORE]
            if self.clear_site_data and policy.clear_site_data:
                headers.append(CLEAR_SITE_DATA)
        return headers

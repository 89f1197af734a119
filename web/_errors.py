"""Errors of the web layer. The store's own errors (sessionquorum.client) pass through unchanged.

Exception
 ├── ConfigurationError      a policy or setting that would weaken the defaults, or is malformed
 ├── SessionNotLoaded        ASGI with autoload=False: the session was used before load_session()
 └── SessionConflict         two requests changed the same attribute; the merge hook refused
"""

from __future__ import annotations


class ConfigurationError(ValueError):
    """A cookie policy or backend setting that is malformed or unsafe."""


class SessionNotLoaded(RuntimeError):
    """The session was read or written before `await load_session(request)` (autoload=False)."""


class SessionConflict(Exception):
    """Another request changed an attribute this one changed too, and the merge hook refused.

    `name` is the attribute. Nothing of this request's changes was written.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"attribute {name!r} was changed by a concurrent request")
        self.name = name

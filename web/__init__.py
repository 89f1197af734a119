"""Web-framework sessions on a sessionquorum cluster, with OWASP's defaults.

One line per framework (each needs its extra: `pip install sessionquorum[asgi|flask|django]`):

    app.add_middleware(sessionquorum.web.asgi.SessionMiddleware, client=AsyncSessionClient(...))
    app.session_interface = sessionquorum.web.flask.QuorumSessionInterface(SessionClient(...))
    SESSION_ENGINE = "sessionquorum.web.django"   # + its SessionMiddleware, SESSIONQUORUM_CLIENT

This package holds the framework-free core they share: the cookie policy, the attribute
serializer, the session mapping with its change tracking, the merge hook and the options.
See web/DESIGN.md for the request path and the invariants.
"""

from ._cookies import CookiePolicy
from ._errors import ConfigurationError, SessionConflict, SessionNotLoaded
from ._flows import MISSING, Merge, SessionOptions, last_writer_wins, refuse_overlap
from ._serializers import JSONSerializer, Serializer
from ._state import SessionData

__all__ = [
    "MISSING",
    "ConfigurationError",
    "CookiePolicy",
    "JSONSerializer",
    "Merge",
    "Serializer",
    "SessionConflict",
    "SessionData",
    "SessionNotLoaded",
    "SessionOptions",
    "last_writer_wins",
    "refuse_overlap",
]

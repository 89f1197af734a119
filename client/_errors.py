"""The client's error tree, and the one table that maps a gRPC status back to it.

    SessionQuorumError              every error this library raises about a request
    ├── InvalidArgument             INVALID_ARGUMENT: the request is malformed (also raised
    │                               locally, e.g. for a token that is not ASCII)
    ├── NotFound                    NOT_FOUND: no such session (or it expired / was deleted)
    ├── AlreadyExists               ALREADY_EXISTS: the token hash (or handle) is taken
    ├── VersionConflict             ABORTED: expected_version did not match
    │                               (.current_version from the node's sq-version trailer)
    ├── QuotaExceeded               RESOURCE_EXHAUSTED: a configured limit would be exceeded
    ├── StaleRequest                OUT_OF_RANGE: the node has seen a newer request id
    ├── EventsCompacted             OUT_OF_RANGE + sq-oldest-cursor: the events after the
    │                               cursor are no longer retained (.oldest_cursor: resume after it)
    ├── PermissionDenied            PERMISSION_DENIED / UNAUTHENTICATED
    ├── Unavailable                 no node gave a definite answer before the deadline, and
    │                               no attempt can have been applied
    └── OutcomeUnknown              no definite answer before the deadline, or the cluster
                                    forgot the deduplication state of a retried request, and
                                    some attempt may have been applied: the change may or may
                                    not exist (.token: the token create / rotate installs)

The node's tree (store/errors.py) is the mirror image: each of its errors has one status,
and this module turns the status back into an error in `error_for_status`, the only place
that reads a status code to pick an exception. Transient statuses (UNAVAILABLE, UNKNOWN,
DEADLINE_EXCEEDED, FAILED_PRECONDITION, CANCELLED) only reach a caller once the retry loop
has given up, so for them the table is not enough: whether any attempt may have been
applied decides between Unavailable and OutcomeUnknown.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc

logger = logging.getLogger(__name__)

# Trailer a node adds to ABORTED: the session's current version, as a decimal string.
VERSION_METADATA_KEY = "sq-version"
# Trailer a node adds to OUT_OF_RANGE from Events: the oldest cursor to resume after.
OLDEST_CURSOR_METADATA_KEY = "sq-oldest-cursor"


class SessionQuorumError(Exception):
    """Base of every error this library raises about a request.

    `message` keeps the node's own status message (it names the limit, the version, ...);
    `code` is the gRPC status the error came from, or the status it stands for when the
    client decided locally.
    """

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, {self.code.name})"


class InvalidArgument(SessionQuorumError):
    """The request is malformed; retrying it unchanged cannot succeed."""


class NotFound(SessionQuorumError):
    """No such session: it never existed, expired, or was deleted or rotated away."""


class AlreadyExists(SessionQuorumError):
    """The token hash or handle is taken (with 256-bit tokens: a bug, not bad luck)."""


class VersionConflict(SessionQuorumError):
    """expected_version did not match: someone else changed the session first.

    `current_version` is the session's version when the node refused, so a caller can
    re-read or merge without parsing the message; None when the node did not say.
    """

    def __init__(self, message: str, code: grpc.StatusCode, *, current_version: int | None = None) -> None:
        super().__init__(message, code)
        self.current_version = current_version


class QuotaExceeded(SessionQuorumError):
    """A configured limit (sizes, counts, sessions per principal) would be exceeded."""


class StaleRequest(SessionQuorumError):
    """The node has applied a newer request id for this client id than the one sent.

    Never expected: the client never has two requests in flight per client id. The lane that
    saw it is retired, so later calls are not affected.
    """


class EventsCompacted(SessionQuorumError):
    """The cursor's next event is no longer retained by the cluster (bounded retention).

    Events were lost to this reader: reconcile from the store (e.g. list_sessions), then
    read on from `oldest_cursor` (the events after it are still there) or from now.
    """

    def __init__(self, message: str, code: grpc.StatusCode, *, oldest_cursor: int) -> None:
        super().__init__(message, code)
        self.oldest_cursor = oldest_cursor


class PermissionDenied(SessionQuorumError):
    """The node refused this client's identity (TLS client certificate) or its rights."""


class Unavailable(SessionQuorumError):
    """No node answered definitely in time; nothing was applied, so a retry is safe."""


class OutcomeUnknown(SessionQuorumError):
    """Some attempt may have been applied, and no node could say whether it was.

    Either no definite answer came before the deadline, or a retry was refused because the
    cluster may have forgotten the request id's deduplication entry (it never applies such
    a retry a second time). The caller must find out or accept either outcome; repeating
    the call would be a *new* request, which the node cannot deduplicate against this one.

    `token` is set by `create` and `rotate`: the new token the call would install. Learn
    whether it took effect with `validate(exc.token)` (linearizable, the default): found
    means it did, so hand that token to the browser; NotFound means it had not when the
    read was served (after a rotate the old token then still works, and the login can be
    retried as a new call). It stays out of `str()` and `repr()`, like every token.
    `code` is always UNKNOWN; the last attempt's own status is on `__cause__`.
    """

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN) -> None:
        super().__init__(message, code)
        self.token: str | None = None


# Statuses that the retry loop treats as "try again" rather than as the answer.
TRANSIENT_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.CANCELLED,
    }
)

# The one table: a definite status from a node -> the error a caller sees.
_DEFINITE: dict[grpc.StatusCode, type[SessionQuorumError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.ABORTED: VersionConflict,
    grpc.StatusCode.RESOURCE_EXHAUSTED: QuotaExceeded,
    grpc.StatusCode.OUT_OF_RANGE: StaleRequest,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDenied,
}


def _version(trailers: Mapping[str, str]) -> int | None:
    text = trailers.get(VERSION_METADATA_KEY)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        # A malformed trailer must not hide the conflict itself.
        logger.warning("ignoring malformed %s trailer %r", VERSION_METADATA_KEY, text)
        return None


def error_for_status(
    code: grpc.StatusCode,
    details: str | None,
    *,
    maybe_applied: bool = False,
    trailers: Mapping[str, str] | None = None,
) -> SessionQuorumError:
    """Return the error for a status; the caller raises it `from` the gRPC error.

    `maybe_applied` only matters for transient statuses, i.e. when the retry loop gives up:
    it is True when some attempt of a mutation may have reached the state machine.
    `trailers` is the node's trailing metadata (sq-version fills VersionConflict).
    """
    message = details or f"status {code.name}"
    cls = _DEFINITE.get(code)
    oldest = (trailers or {}).get(OLDEST_CURSOR_METADATA_KEY)
    if code is grpc.StatusCode.OUT_OF_RANGE and oldest is not None and oldest.isdigit():
        return EventsCompacted(message, code, oldest_cursor=int(oldest))
    if cls is VersionConflict:
        return VersionConflict(message, code, current_version=_version(trailers or {}))
    if cls is None:
        if code in TRANSIENT_CODES:
            if maybe_applied:
                # The client decided this, not a node: it stands for UNKNOWN whatever the
                # last attempt's status was (an UNAVAILABLE would read as "nothing applied").
                return OutcomeUnknown(message)
            cls = Unavailable
        else:
            # INTERNAL, UNIMPLEMENTED, DATA_LOSS, ...: a bug somewhere, never retried.
            cls = SessionQuorumError
    return cls(message, code)

"""Value types handed to callers, and their conversion to and from the wire messages.

Times stay in integer milliseconds as the node stamps them (replicated state never holds
floats); only the timeouts a caller *passes* are seconds, converted in `seconds_to_ms`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import grpc

from sessionquorum.proto import sessionquorum_pb2 as pb

from ._errors import InvalidArgument

_NO_ATTRIBUTES: Mapping[str, bytes] = MappingProxyType({})
_INVALID = grpc.StatusCode.INVALID_ARGUMENT


@dataclass(frozen=True, slots=True)
class Session:
    """A session as the node reported it.

    `attributes` is filled only by validate(); update, touch, rotate and list return
    metadata with empty attributes (the node does not send them back, to keep answers small).
    It is left out of the hash (a mapping is not hashable) and out of repr (attributes
    often hold secrets such as CSRF tokens, and reprs end up in logs).
    """

    handle: str
    principal: str | None
    attributes: Mapping[str, bytes] = field(hash=False, repr=False)
    created_ms: int
    last_access_ms: int
    idle_timeout_ms: int
    absolute_deadline_ms: int
    version: int


@dataclass(frozen=True, slots=True)
class Created:
    """Result of create(): the new token (give it to the browser, then forget it)."""

    token: str = field(repr=False)
    session: Session
    evicted_handles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rotated:
    """Result of rotate(): `token` is the NEW token; the old one no longer opens the session."""

    token: str = field(repr=False)
    session: Session
    evicted_handles: tuple[str, ...]


def session_from_pb(message: pb.Session) -> Session:
    """Convert a wire Session; "" principal means anonymous (proto3 has no null string)."""
    attributes: Mapping[str, bytes] = _NO_ATTRIBUTES
    if message.attributes:
        # The node refuses non-UTF-8 names on the way in, so strict decoding cannot fail
        # against a correct node; if it does, the error should be loud.
        attributes = MappingProxyType({a.name.decode("utf-8"): a.value for a in message.attributes})
    return Session(
        handle=message.handle,
        principal=message.principal or None,
        attributes=attributes,
        created_ms=message.created_ms,
        last_access_ms=message.last_access_ms,
        idle_timeout_ms=message.idle_timeout_ms,
        absolute_deadline_ms=message.absolute_deadline_ms,
        version=message.version,
    )


def encode_name(name: str) -> bytes:
    # surrogatepass: a name that is not valid Unicode still reaches the node, which refuses
    # it with INVALID_ARGUMENT; validation of names lives in one place, the node.
    return name.encode("utf-8", errors="surrogatepass")


def attributes_to_pb(attributes: Mapping[str, bytes] | None) -> list[pb.Attribute]:
    if not attributes:
        return []
    return [pb.Attribute(name=encode_name(name), value=value) for name, value in attributes.items()]


def names_to_pb(names: Iterable[str] | None) -> list[bytes]:
    if names is None:
        return []
    if isinstance(names, str):
        # A bare string is iterable too; deleting its characters one by one is never meant.
        raise InvalidArgument("delete must be a collection of names, not a str", _INVALID)
    return [encode_name(name) for name in names]


def seconds_to_ms(name: str, seconds: float) -> int:
    """Convert a caller's timeout to wire milliseconds; range checks are the node's."""
    if not math.isfinite(seconds):
        raise InvalidArgument(f"{name} must be a finite number of seconds, got {seconds!r}", _INVALID)
    return round(seconds * 1000)

"""Attribute values: the store keeps bytes, the application keeps Python values.

Each attribute is serialized on its own, so that a request sends only the attributes it
changed, and two requests that change different attributes never overwrite each other.
"""

from __future__ import annotations

import json
from typing import Any, Protocol


class Serializer(Protocol):
    """Turns one attribute value into bytes and back. Must be deterministic: equal values
    give equal bytes, because that is how unchanged attributes are recognised."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JSONSerializer:
    """Compact, key-sorted JSON (UTF-8). Values must be JSON types; never pickle a session:
    whoever can write the store would run code in every app server."""

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")

    def loads(self, data: bytes) -> Any:
        return json.loads(data)

"""Request ids for exactly-once mutations: a pool of lanes, one call per lane at a time.

The node keeps, per client id, only the latest sequence and its result, and refuses an
older sequence (OUT_OF_RANGE). That makes a retry with the same (client id, sequence)
safe, but only if a client id never has two requests in flight: a second one would
overwrite the first's remembered result, and the first's retry would then be refused or,
worse, answered with the wrong result. So each concurrent call leases its own lane
(client id, next sequence), keeps the same request id through all of its retries, and
hands the lane back with the sequence advanced. Lanes are reused LIFO so a steady load
touches few client ids (each one costs the node a dedup-table entry).

A lane is retired instead of reused when the call ended without a definite answer
(OutcomeUnknown, or an exception from outside this library such as KeyboardInterrupt):
an attempt may still sit in some node's queue or log, so the client id may still have a
request in flight. A fresh random client id costs nothing and cannot collide with it.
StaleRequest retires the lane too: the node knows a newer sequence than the lane does.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sessionquorum.proto import sessionquorum_pb2 as pb

from ._errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    Unavailable,
    VersionConflict,
)

logger = logging.getLogger(__name__)

CLIENT_ID_BYTES = 16

# Errors after which no attempt of the call can still be applied later: either a node
# decided the request (the decision is replicated with its request id), or the retry loop
# gave up knowing that no attempt can have reached a state machine (Unavailable).
_DEFINITE_ERRORS: tuple[type[Exception], ...] = (
    InvalidArgument,
    NotFound,
    AlreadyExists,
    VersionConflict,
    QuotaExceeded,
    PermissionDenied,
    Unavailable,
)


@dataclass(slots=True)
class _Lane:
    client_id: bytes
    next_sequence: int


def _random_client_id() -> bytes:
    return secrets.token_bytes(CLIENT_ID_BYTES)


class LanePool:
    """Hands out request ids so that no client id ever has two calls in flight."""

    def __init__(self, new_client_id: Callable[[], bytes] = _random_client_id) -> None:
        self._new_client_id = new_client_id
        self._lock = threading.Lock()
        self._free: list[_Lane] = []
        self._created = 0

    @contextmanager
    def lease(self) -> Iterator[pb.RequestId]:
        """Yield the request id for one call (all its attempts); release it afterwards."""
        lane = self._take()
        request_id = pb.RequestId(client_id=lane.client_id, sequence=lane.next_sequence)
        keep = False
        try:
            yield request_id
            keep = True
        except _DEFINITE_ERRORS:
            keep = True
            raise
        finally:
            self._give_back(lane, keep=keep)

    def _take(self) -> _Lane:
        with self._lock:
            if self._free:
                return self._free.pop()
            self._created += 1
        # The contract starts sequences at 1 (sessionquorum.proto, RequestId).
        return _Lane(client_id=self._new_client_id(), next_sequence=1)

    def _give_back(self, lane: _Lane, *, keep: bool) -> None:
        if not keep:
            logger.debug("retiring client id %s at sequence %d", lane.client_id[:4].hex(), lane.next_sequence)
            return
        # Advance even when the call failed: a sequence is never reused for another request.
        lane.next_sequence += 1
        with self._lock:
            self._free.append(lane)

    @property
    def created(self) -> int:
        """How many lanes (client ids) this pool has made; for tests and metrics."""
        with self._lock:
            return self._created

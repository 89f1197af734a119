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

Epochs make a forgotten entry detectable (store/dedup.py). The node's table is bounded, so
it may forget a client id; a retry of that id would then apply a second time. So every
client id carries an epoch, a cluster time learned before the id was first used, and the
node refuses an unknown id whose epoch is not after the latest entry it forgot. The pool
keeps the latest cluster time it learned (from such refusals) and every new lane takes it.
A refused lane is retired; `Lease.renew` moves a call to a brand-new lane (not a free one:
a free lane's older epoch could be refused too), which the node cannot have forgotten.

A forked child (`reset_after_fork`, via _fork.py) drops every lane it inherited: the parent
keeps using those client ids, and two processes sending one request id for different
requests is exactly what deduplication cannot survive. The child's lanes are made on demand
with fresh random ids and the pool's learned epoch, which is still a cluster time learned
before their first use (it was learned before the fork), so no Status round is needed. A
lane leased before the fork and released in the child is retired, never handed out.
"""

from __future__ import annotations

import copy
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

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


class Mutation(Protocol):
    """Every mutating request message: it carries the request id of exactly-once retries."""

    @property
    def request_id(self) -> pb.RequestId: ...


_M = TypeVar("_M", bound=Mutation)


@dataclass(slots=True)
class _Lane:
    client_id: bytes
    next_sequence: int
    # The cluster time learned before this client id was first used (0: none yet).
    epoch_ms: int
    # The pool's fork generation when the lane was made (see LanePool.reset_after_fork).
    generation: int = 0

    def request_id(self) -> pb.RequestId:
        return pb.RequestId(
            client_id=self.client_id, sequence=self.next_sequence, client_epoch_ms=self.epoch_ms
        )


def _random_client_id() -> bytes:
    return secrets.token_bytes(CLIENT_ID_BYTES)


class Lease(Generic[_M]):
    """One call's request message, stamped with its lane's request id; used by one thread.

    The retry loop reports a refusal for a possibly forgotten id with `forgotten`, and may
    then move the call to a fresh lane with `renew`, which returns the message to send now.
    """

    def __init__(self, pool: LanePool, lane: _Lane, request: _M) -> None:
        self._pool = pool
        self._lane = lane
        self._lane_forgotten = False
        self.renewed = False
        self.request = request
        request.request_id.CopyFrom(lane.request_id())

    def forgotten(self, epoch_ms: int | None) -> None:
        """The cluster may have forgotten this lane's client id; `epoch_ms` is its time then."""
        if epoch_ms is not None:
            self._pool.learn_epoch(epoch_ms)
        # The node would refuse this client id from now on, whatever the sequence.
        self._lane_forgotten = True

    def renew(self) -> _M:
        """Retire the current lane; return a copy of the request under a brand-new lane.

        A copy rather than an edit: the message already sent stays as it was sent.
        """
        self._pool.retire(self._lane)
        self._lane = self._pool.new_lane()
        self._lane_forgotten = False
        self.renewed = True
        self.request = copy.deepcopy(self.request)
        self.request.request_id.CopyFrom(self._lane.request_id())
        return self.request

    @property
    def request_id(self) -> pb.RequestId:
        return self.request.request_id

    def _release(self, *, keep: bool) -> None:
        if keep and not self._lane_forgotten:
            self._pool.give_back(self._lane)
        else:
            self._pool.retire(self._lane)


class LanePool:
    """Hands out request ids so that no client id ever has two calls in flight."""

    def __init__(self, new_client_id: Callable[[], bytes] = _random_client_id) -> None:
        self._new_client_id = new_client_id
        self._lock = threading.Lock()
        self._free: list[_Lane] = []
        self._created = 0
        self._epoch_ms = 0
        self._generation = 0

    @contextmanager
    def lease(self, request: _M) -> Iterator[Lease[_M]]:
        """Stamp `request` with a request id for one call (all its attempts); release it after."""
        with self._lock:
            lane = self._free.pop() if self._free else None
        lease = Lease(self, lane or self.new_lane(), request)
        keep = False
        try:
            yield lease
            keep = True
        except _DEFINITE_ERRORS:
            keep = True
            raise
        finally:
            lease._release(keep=keep)

    def learn_epoch(self, epoch_ms: int) -> None:
        """Remember a cluster time; lanes made from now on carry the latest one learned."""
        with self._lock:
            self._epoch_ms = max(self._epoch_ms, epoch_ms)

    def new_lane(self) -> _Lane:
        with self._lock:
            self._created += 1
            epoch_ms, generation = self._epoch_ms, self._generation
        # The contract starts sequences at 1 (sessionquorum.proto, RequestId).
        return _Lane(self._new_client_id(), next_sequence=1, epoch_ms=epoch_ms, generation=generation)

    def give_back(self, lane: _Lane) -> None:
        # Advance even when the call failed: a sequence is never reused for another request.
        lane.next_sequence += 1
        with self._lock:
            if lane.generation == self._generation:
                self._free.append(lane)
                return
        # Made before a fork: the other process may use the same client id.
        self.retire(lane)

    def reset_after_fork(self) -> None:
        """In a forked child: forget every inherited lane; keep the learned epoch.

        The lock is new because a parent thread may have held it at the fork. The lanes
        (free ones, and any a parent thread had leased) carry client ids the parent goes on
        using. The epoch stays: it was learned from the cluster before the fork, hence
        before the first use of any lane the child makes, which is all the node's rule asks.
        """
        self._lock = threading.Lock()
        self._free = []
        self._generation += 1

    def retire(self, lane: _Lane) -> None:
        logger.debug("retiring client id %s at sequence %d", lane.client_id[:4].hex(), lane.next_sequence)

    @property
    def epoch_ms(self) -> int:
        """The latest cluster time learned (ms); 0 before any."""
        with self._lock:
            return self._epoch_ms

    @property
    def created(self) -> int:
        """How many lanes (client ids) this pool has made; for tests and metrics."""
        with self._lock:
            return self._created

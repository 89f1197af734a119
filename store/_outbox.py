"""Proposals waiting for the Raft tick thread, sent as packed entries, answered per proposer.

`ReplicatedLog.submit` (any event loop) puts an encoded command here and wakes the tick
thread; the tick thread, when it drains commands (`_GuardedSyncObj._checkCommandsToApply`),
calls `flush`, which hands what waits to pysyncobj: runs of several as one packed entry
(`_packing`) while every member can apply one, otherwise each as its own entry. One
callback per entry answers every proposer in it: the reply at its position, or the entry's
failure, with one `call_soon_threadsafe` per event loop and entry rather than one per
proposal (each costs a write to the loop's self-pipe).

pysyncobj is not imported here: `raft.py` hands in how to send, the code of success and how
a failure code becomes a store error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _packing
from .errors import OutcomeUnknown, StoreError

log = logging.getLogger(__name__)

_DEFAULT_LIMITS = _packing.PackLimits()

# (entry, callback(result, error code)) -> pysyncobj's command queue.
Send = Callable[[bytes, Callable[[Any, int], None]], None]


@dataclass(frozen=True, slots=True)
class _Proposal:
    entry: bytes
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


def _settle(
    futures: list[asyncio.Future[Any]], replies: list[Any] | None, error: Callable[[], StoreError]
) -> None:
    """On the proposers' loop: each future gets its reply, or a fresh error of the entry's outcome."""
    for i, future in enumerate(futures):
        if future.done():
            continue
        if replies is not None:
            future.set_result(replies[i])
        else:
            future.set_exception(error())


class Outbox:
    """Bounded: at most `max_waiting` proposals wait; more are refused at once (nothing appended)."""

    def __init__(
        self,
        send: Send,
        *,
        success: int,
        failure: Callable[[int], StoreError],
        queue_full: int,
        may_pack: Callable[[], bool],
        max_waiting: int,
        limits: _packing.PackLimits = _DEFAULT_LIMITS,
    ) -> None:
        self._send = send
        self._success = success
        self._failure = failure
        self._queue_full = queue_full
        self._may_pack = may_pack
        self._max_waiting = max_waiting
        self._limits = limits
        self._lock = threading.Lock()
        self._waiting: list[_Proposal] = []
        # Tick thread only: packed entries this node proposed, and the commands they carried.
        self.packed_entries = 0
        self.packed_commands = 0

    def put(self, entry: bytes) -> asyncio.Future[Any]:
        """On an event loop: queue one encoded command; the future resolves on apply here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            full = len(self._waiting) >= self._max_waiting
            if not full:
                self._waiting.append(_Proposal(entry, loop, future))
        if full:
            future.set_exception(self._failure(self._queue_full))
        return future

    def __len__(self) -> int:
        return len(self._waiting)

    def flush(self) -> None:
        """On the tick thread: send everything waiting, packed where allowed, in arrival order."""
        if not self._waiting:  # unlocked peek: a proposal put meanwhile wakes the next tick
            return
        with self._lock:
            taken, self._waiting = self._waiting, []
        if len(taken) > 1 and self._may_pack():
            groups = _packing.take_groups(taken, lambda p: len(p.entry), self._limits)
        else:
            groups = [[p] for p in taken]
        for group in groups:
            if len(group) == 1:
                self._send(group[0].entry, self._callback(group, packed=False))
            else:
                self.packed_entries += 1
                self.packed_commands += len(group)
                self._send(_packing.pack([p.entry for p in group]), self._callback(group, packed=True))

    def _callback(self, group: list[_Proposal], packed: bool) -> Callable[[Any, int], None]:
        def on_result(result: Any, err: int) -> None:
            # On pysyncobj's tick thread. Never raise into pysyncobj: it would apply the entry
            # again (it advances lastApplied after the callbacks).
            replies: list[Any] | None = None
            error: Callable[[], StoreError]
            if err == self._success:
                replies = _packing.replies_of(result, len(group)) if packed else [result]
                error = _malformed
                if replies is None:
                    log.error(
                        "a packed entry answered %r for %d proposals", type(result).__name__, len(group)
                    )
            else:
                error = lambda: self._failure(err)  # noqa: E731 - one fresh error per future
            by_loop: dict[asyncio.AbstractEventLoop, tuple[list[asyncio.Future[Any]], list[Any]]] = {}
            for i, p in enumerate(group):
                futures, mine = by_loop.setdefault(p.loop, ([], []))
                futures.append(p.future)
                if replies is not None:
                    mine.append(replies[i])
            for loop, (futures, mine) in by_loop.items():
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                    loop.call_soon_threadsafe(_settle, futures, mine if replies is not None else None, error)

        return on_result


def _malformed() -> StoreError:
    return OutcomeUnknown("the leader answered a packed entry malformed; retry with the same request id")

"""Fork safety: a forked child must not inherit its parent's request ids, channels or locks.

A web server that uses a client at start-up and then forks its workers (gunicorn
`--preload`, uWSGI without `lazy-apps`, `multiprocessing` with the fork start method) gives
every worker a copy of the parent's client. Without care, every copy would then
- lease the same idle lanes, i.e. send the same (client id, sequence) for different
  requests. The node deduplicates by request id, so one worker's logout could be answered
  with another worker's remembered reply and never run (issue 9, finding 1);
- use the parent's gRPC channels, whose connections and C-core state the child shares with
  the parent but whose threads it lacks (gRPC: "doesn't support fork()");
- wait forever on a lock, slot count or queue that a parent thread held at the fork.

So every client registers here, in a `WeakSet` (a client that is collected leaves by
itself), and one `os.register_at_fork(after_in_child=...)` hook calls each live client's
`_reset_after_fork()` in the child before any of its code runs. What each part does is
documented with it (`LanePool`, `ChannelPool`, `Caller`, and their asyncio twins); in
short: fresh client ids, new channels opened lazily, fresh locks, empty coalescers. The
parent is untouched. The node's fingerprint check (store/dedup.py) is the second line of
defence: a reused request id with a different body is refused, never answered.

Python runs these hooks for `os.fork()` (gunicorn, multiprocessing) and when C code calls
`PyOS_AfterFork_Child()`. uWSGI forks in C and calls it only with `py-call-osafterfork`
(or `py-call-uwsgi-fork-hooks` in newer releases); without either, make the client after
the fork (`lazy-apps`, or uwsgidecorators' `@postfork`).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class ForkAware(Protocol):
    def _reset_after_fork(self) -> None:
        """Runs in a forked child, on its only thread, before the child uses the object."""


_live: weakref.WeakSet[Any] = weakref.WeakSet()
_registered = False
_register_lock = threading.Lock()
# Objects a child inherited and must neither use nor let be collected (see `abandon`).
_abandoned: list[object] = []


def track(client: ForkAware) -> None:
    """Reset `client` in every forked child from now on, for as long as it lives."""
    global _registered
    with _register_lock:
        if not _registered:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _registered = True
        _live.add(client)


def abandon(inherited: object) -> None:
    """Keep an object the child inherited alive and unused for the child's whole life.

    For the parent's gRPC channels: closing or collecting one in the child runs gRPC core
    on connections whose sockets the parent still uses (a TLS close alert or an HTTP/2
    GOAWAY written from the child would land in the parent's stream). One list entry per
    inherited channel, once per fork, is a price worth paying for never touching them.
    """
    _abandoned.append(inherited)


def _after_fork_in_child() -> None:
    global _register_lock
    # A parent thread may have held it at the fork; the child has only this thread.
    _register_lock = threading.Lock()
    for client in list(_live):
        try:
            client._reset_after_fork()
        except Exception:
            # The hook must not raise into os.fork(); a client that failed to reset is
            # logged, and its next call fails or works on its own.
            logger.exception("resetting %r after fork failed", client)

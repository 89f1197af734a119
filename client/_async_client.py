"""AsyncSessionClient: SessionClient for asyncio, on grpc.aio.

Every method builds the very `Call` that SessionClient's method of the same name builds
(_calls.py) and runs it through `AsyncCaller`, which drives the same `RetryState`: the
two clients share routing, classification, request ids, errors and the Batch rules, and
differ only in how they wait.

One client belongs to one event loop: it may be made outside a running loop (at import
or in a framework's start-up hook), but its channels open at the first call, inside the
loop, and every later call must come from that loop (grpc.aio channels are loop-bound).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TypeVar

from . import _calls as calls
from . import _fork
from ._async_retry import AsyncCaller
from ._calls import (
    DEFAULT_ABSOLUTE_TIMEOUT_S,
    DEFAULT_ATTEMPT_TIMEOUT_S,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    READ_FROM_LEADER,
)
from ._channels import DEFAULT_MAX_MESSAGE_BYTES, AsyncChannelPool, ClientClosedError, TLSConfig
from ._events import Event, EventReader, read_events_async
from ._session import Created, Rotated, Session

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class AsyncSessionClient(calls.ClientCore):
    """An asyncio client for a sessionquorum cluster; share one per event loop.

    Same arguments, methods, return values and errors as SessionClient; each method is a
    coroutine. Use `async with AsyncSessionClient(...) as client:` or `await client.close()`.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        tls: TLSConfig | None = None,
        insecure: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        attempt_timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        read_from: str = READ_FROM_LEADER,
        coalesce: bool = True,
    ) -> None:
        super().__init__(
            endpoints,
            tls=tls,
            insecure=insecure,
            timeout_s=timeout_s,
            attempt_timeout_s=attempt_timeout_s,
            max_message_bytes=max_message_bytes,
            read_from=read_from,
        )
        self._channels = AsyncChannelPool(tls, max_message_bytes)
        self._caller = AsyncCaller(
            self._router, self._channels, attempt_timeout_s=self._attempt_timeout_s, coalesce=coalesce
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # A worker forked from a process that made this client gets fresh request ids,
        # channels and loop binding before it runs (_fork.py).
        _fork.track(self)

    # -- lifecycle ---------------------------------------------------------------------

    async def close(self) -> None:
        """Close all channels; idempotent. Calls still running end with an error."""
        self._closed = True
        self._caller.close()
        await self._channels.close()

    def _reset_after_fork(self) -> None:
        # The parent's loop does not run in the child: the child's first call binds anew.
        self._loop = None
        self._router.reset_after_fork()
        self._channels.reset_after_fork()
        self._caller.reset_after_fork()

    async def __aenter__(self) -> AsyncSessionClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self, call: calls.Call[_T], timeout_s: float | None) -> _T:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                raise RuntimeError("an AsyncSessionClient is used from the event loop of its first call only")
            self._loop = loop
        if self._closed:
            raise ClientClosedError("the AsyncSessionClient is closed")
        return await self._caller.run(call, self._deadline(timeout_s))

    # -- mutations: each carries a request id leased for the whole call --------------------

    async def create(
        self,
        *,
        principal: str | None = None,
        attributes: Mapping[str, bytes] | None = None,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        absolute_timeout_s: float = DEFAULT_ABSOLUTE_TIMEOUT_S,
        timeout_s: float | None = None,
    ) -> Created:
        """Start a session under a fresh token; see SessionClient.create."""
        return await self._run(
            calls.create(principal, attributes, idle_timeout_s, absolute_timeout_s), timeout_s
        )

    async def update(
        self,
        token: str,
        *,
        set: Mapping[str, bytes] | None = None,
        delete: Iterable[str] | None = None,
        increment: Mapping[str, int] | None = None,
        expected_version: int | None = None,
        idle_timeout_s: float | None = None,
        timeout_s: float | None = None,
    ) -> Session:
        """Delete, set and increment attributes in one step; see SessionClient.update."""
        return await self._run(
            calls.update(token, set, delete, increment, expected_version, idle_timeout_s), timeout_s
        )

    async def touch(self, token: str, *, timeout_s: float | None = None) -> Session:
        """Refresh the session's last access now (never extends its absolute deadline)."""
        return await self._run(calls.touch(token), timeout_s)

    async def rotate(
        self, token: str, *, principal: str | None = None, grace: bool = False, timeout_s: float | None = None
    ) -> Rotated:
        """Move the session to a new token (do this at login); see SessionClient.rotate."""
        return await self._run(calls.rotate(token, principal, grace), timeout_s)

    async def delete(self, token: str, *, timeout_s: float | None = None) -> bool:
        """End the session (logout); returns whether it existed. Idempotent."""
        return await self._run(calls.delete(token), timeout_s)

    async def delete_handle(self, handle: str, *, timeout_s: float | None = None) -> bool:
        """End a session by its non-secret handle (e.g. from list_sessions)."""
        return await self._run(calls.delete_handle(handle), timeout_s)

    async def revoke_principal(
        self,
        principal: str,
        *,
        except_handle: str | None = None,
        token: str | None = None,
        timeout_s: float | None = None,
    ) -> list[str]:
        """End all of a principal's sessions, optionally but one; see SessionClient.revoke_principal."""
        return await self._run(calls.revoke_principal(principal, except_handle, token), timeout_s)

    async def disable_principal(self, principal: str, *, timeout_s: float | None = None) -> list[str]:
        """Disable a principal and end its sessions; see SessionClient.disable_principal."""
        return await self._run(calls.set_principal_enabled(principal, False), timeout_s)

    async def enable_principal(self, principal: str, *, timeout_s: float | None = None) -> None:
        """Let a disabled principal get sessions again; see SessionClient.enable_principal."""
        await self._run(calls.set_principal_enabled(principal, True), timeout_s)

    # -- reads: no request id; retried freely ----------------------------------------------

    async def validate(
        self, token: str, *, touch: bool = False, stale: bool = False, timeout_s: float | None = None
    ) -> Session:
        """Return the session with its attributes, or raise NotFound; see SessionClient.validate."""
        return await self._run(
            calls.validate(token, touch, stale, reads_anywhere=self._reads_anywhere), timeout_s
        )

    async def refresh_members(self, *, timeout_s: float | None = None) -> tuple[str, ...]:
        """Take the cluster's members from the leader; see SessionClient.refresh_members."""
        for _ in range(calls.MEMBER_REFRESH_TRIES):
            is_leader, leader, members = await self._run(calls.members(), timeout_s)
            if is_leader and members:
                self._router.replace_members(members)
                break
            if not leader:
                break
            self._router.follow_hint(leader)
        return self._router.endpoints

    async def list_sessions(
        self, principal: str, *, token: str | None = None, timeout_s: float | None = None
    ) -> list[Session]:
        """The principal's live sessions, metadata only; see SessionClient.list_sessions."""
        call = calls.list_sessions(principal, token, reads_anywhere=self._reads_anywhere)
        return await self._run(call, timeout_s)

    # -- lifecycle events: a stream from any node, resumed across nodes ---------------------

    def events(self, cursor: int | None = None) -> AsyncIterator[Event]:
        """`async for event in client.events(cursor)`: SessionClient.events on this loop."""
        if self._closed:
            raise ClientClosedError("the AsyncSessionClient is closed")
        return read_events_async(self._channels, EventReader(self._router, cursor, self._timeout_s))

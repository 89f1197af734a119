"""SessionClient: the public face for threads; builds calls in _calls, runs them in _retry.

Each method is one line on purpose: it turns its arguments into a `Call` (the request
message and how to read the answer, shared with AsyncSessionClient) and hands it to the
retry loop, which leases a request id if the call mutates. Everything that decides *how*
a call reaches the leader lives elsewhere, so every method gets identical retry and error
semantics, in both clients.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType

from . import _calls as calls
from . import _fork
from ._calls import (
    DEFAULT_ABSOLUTE_TIMEOUT_S,
    DEFAULT_ATTEMPT_TIMEOUT_S,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    READ_FROM_LEADER,
)
from ._channels import DEFAULT_MAX_MESSAGE_BYTES, ChannelPool, TLSConfig
from ._events import Event, EventReader, read_events
from ._retry import Caller
from ._session import Created, Rotated, Session

logger = logging.getLogger(__name__)


class SessionClient(calls.ClientCore):
    """A thread-safe client for a sessionquorum cluster; share one per process.

    Plaintext must be asked for (`insecure=True`): the token hashes this client sends are
    credentials against the store, so the default is to refuse to run without TLS.
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
        self._channels = ChannelPool(tls, max_message_bytes)
        self._caller = Caller(
            self._router, self._channels, attempt_timeout_s=self._attempt_timeout_s, coalesce=coalesce
        )
        # A worker forked from a process that made this client gets fresh request ids,
        # channels and locks before it runs (_fork.py).
        _fork.track(self)

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Close all channels; idempotent. Calls still running end with an error."""
        self._caller.close()
        self._channels.close()

    def _reset_after_fork(self) -> None:
        self._router.reset_after_fork()
        self._channels.reset_after_fork()
        self._caller.reset_after_fork()

    def __enter__(self) -> SessionClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- mutations: each carries a request id leased for the whole call --------------------

    def create(
        self,
        *,
        principal: str | None = None,
        attributes: Mapping[str, bytes] | None = None,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        absolute_timeout_s: float = DEFAULT_ABSOLUTE_TIMEOUT_S,
        timeout_s: float | None = None,
    ) -> Created:
        """Start a session under a fresh token; `principal=None` makes it anonymous.

        On OutcomeUnknown, `exc.token` is the token; `validate(exc.token)` tells whether
        the session was created.
        """
        call = calls.create(principal, attributes, idle_timeout_s, absolute_timeout_s)
        return self._caller.run(call, self._deadline(timeout_s))

    def update(
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
        """Delete, set and increment attributes in one step; with `expected_version`, compare-and-set.

        `increment` adds to counters held as decimal integers (a missing one counts as 0)
        on the node, so concurrent increments never lose one another. The returned
        Session's attributes are the incremented counters' new values. `idle_timeout_s`
        gives the session a new idle timeout (its absolute deadline never moves); a
        cluster still being upgraded refuses it with FAILED_PRECONDITION.
        """
        call = calls.update(token, set, delete, increment, expected_version, idle_timeout_s)
        return self._caller.run(call, self._deadline(timeout_s))

    def touch(self, token: str, *, timeout_s: float | None = None) -> Session:
        """Refresh the session's last access now (never extends its absolute deadline)."""
        return self._caller.run(calls.touch(token), self._deadline(timeout_s))

    def rotate(
        self,
        token: str,
        *,
        principal: str | None = None,
        grace: bool = False,
        timeout_s: float | None = None,
    ) -> Rotated:
        """Move the session to a new token (do this at login); the old token stops working.

        `principal` binds or re-binds the session; None keeps the current binding. The
        returned `Rotated.token` is the NEW token to hand to the browser. On OutcomeUnknown,
        `exc.token` is that new token: if `validate(exc.token)` finds the session, the rotate
        took effect and the browser needs the new token; on NotFound the old one still works.
        `grace=True` (a routine rotation, not with `principal`) lets the old token serve the
        session for the cluster's `rotation_grace_ms`, for requests already in flight; any
        use of it after that is a reuse the cluster records (a theft signal).
        """
        return self._caller.run(calls.rotate(token, principal, grace), self._deadline(timeout_s))

    def delete(self, token: str, *, timeout_s: float | None = None) -> bool:
        """End the session (logout); returns whether it existed. Idempotent."""
        return self._caller.run(calls.delete(token), self._deadline(timeout_s))

    def delete_handle(self, handle: str, *, timeout_s: float | None = None) -> bool:
        """End a session by its non-secret handle (e.g. from list_sessions)."""
        return self._caller.run(calls.delete_handle(handle), self._deadline(timeout_s))

    def revoke_principal(
        self,
        principal: str,
        *,
        except_handle: str | None = None,
        token: str | None = None,
        timeout_s: float | None = None,
    ) -> list[str]:
        """End all of a principal's sessions, optionally but one; returns the ended handles.

        `token`, a live session of `principal`, is what an app-role certificate needs to act
        for the principal (store/authz.py); without it, only an admin certificate may.
        """
        call = calls.revoke_principal(principal, except_handle, token)
        return self._caller.run(call, self._deadline(timeout_s))

    def disable_principal(self, principal: str, *, timeout_s: float | None = None) -> list[str]:
        """Disable a principal: no new session for it until enabled, and every session it has
        ends in the same command (an admin operation); returns the ended handles."""
        return self._caller.run(calls.set_principal_enabled(principal, False), self._deadline(timeout_s))

    def enable_principal(self, principal: str, *, timeout_s: float | None = None) -> None:
        """Let a disabled principal get sessions again (an admin operation)."""
        self._caller.run(calls.set_principal_enabled(principal, True), self._deadline(timeout_s))

    # -- reads: no request id; retried freely ----------------------------------------------

    def validate(
        self, token: str, *, touch: bool = False, stale: bool = False, timeout_s: float | None = None
    ) -> Session:
        """Return the session with its attributes, or raise NotFound.

        `stale=True` lets any node answer from local state (faster, may lag or miss a
        recent logout; spread over the nodes); it is ignored with `touch=True`. A touch
        is idempotent at the node, so it is retried like a read. Linearizable reads go to
        the leader, or to any node with `read_from="any"`: each answer includes every write
        acknowledged before the call.
        """
        call = calls.validate(token, touch, stale, reads_anywhere=self._reads_anywhere)
        return self._caller.run(call, self._deadline(timeout_s))

    def refresh_members(self, *, timeout_s: float | None = None) -> tuple[str, ...]:
        """Take the cluster's members from the leader (live membership: `member add|remove`)
        and route by them from now on; returns the endpoints. Call it now and then (a
        minute apart is plenty): leader hints already add a new leader's address."""
        for _ in range(calls.MEMBER_REFRESH_TRIES):
            is_leader, leader, members = self._caller.run(calls.members(), self._deadline(timeout_s))
            if is_leader and members:
                self._router.replace_members(members)
                break
            if not leader:
                break
            self._router.follow_hint(leader)
        return self._router.endpoints

    def list_sessions(
        self, principal: str, *, token: str | None = None, timeout_s: float | None = None
    ) -> list[Session]:
        """The principal's live sessions, metadata only (for a "your devices" page).

        `token`: as for revoke_principal (an app-role certificate needs it).
        """
        call = calls.list_sessions(principal, token, reads_anywhere=self._reads_anywhere)
        return self._caller.run(call, self._deadline(timeout_s))

    # -- lifecycle events: a stream from any node, resumed across nodes ---------------------

    def events(self, cursor: int | None = None) -> Iterator[Event]:
        """Lifecycle events in commit order, forever: after `cursor`, or from now if None.

        A failed or ended stream is reopened on another node after the last event
        returned: no gap, no duplicate. Raises EventsCompacted when the events after the
        cursor are no longer retained, Unavailable when no node served for `timeout_s`.
        Needs the admin role. Close (or leave) the iterator to cancel the stream.
        """
        return read_events(self._channels, EventReader(self._router, cursor, self._timeout_s))

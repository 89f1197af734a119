"""The retry loop: one logical call, many attempts, one overall deadline.

The loop's decisions live in `RetryState`, which neither sends nor waits: a driver makes
an attempt, reports a failure with `on_error` and gets back the next `Step` (raise this
error, or attempt again after this pause, at `state.endpoint` with `state.request`), and
at the deadline asks `give_up` for the error. `Caller` below is the driver for threads
(blocking calls, an Event wait for backoff); `_async_retry.AsyncCaller` is the one for
asyncio. Both therefore route, retry, classify and report exactly alike.

Every attempt of a call sends the very same request message, so a mutation keeps its
request id (see _lanes.py) and the node deduplicates any repeat. The loop therefore never
has to guess whether retrying is safe; it only has to report honestly when it gives up:

- a definite status (NOT_FOUND, ABORTED, ...) is raised at once, translated in
  _errors.error_for_status;
- at the deadline, a mutation of which some attempt may have been applied raises
  OutcomeUnknown, anything else Unavailable.

One refusal breaks the "same message" rule: the node may have forgotten the request id's
exactly-once entry (UNKNOWN with `sq-epoch`). Resending that id could apply it twice, so
it is never resent. If no earlier attempt of the call may have been applied, nothing of
it exists anywhere, and the call moves once to a fresh client id that carries the
learned epoch (a new message that differs only in its request id), within the same
deadline. Otherwise the outcome is unknown, and the loop says so.

Attempts are spaced by exponential backoff with full jitter (so many clients retrying
after a leader change do not arrive in lockstep), except that a leader hint is followed
at once: a redirect costs one round trip and the hint is usually right. Consecutive
immediate redirects are bounded because during an election two nodes can point at each
other.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from ._calls import Call
from ._channels import ChannelPool, ClientClosedError
from ._coalesce import Coalescer
from ._errors import OutcomeUnknown, SessionQuorumError, error_for_status
from ._lanes import LanePool
from ._routing import DEDUP_EXPIRED_PREFIX, Action, Router, Verdict, classify, trailers

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.020
BACKOFF_MAX_S = 0.500
# How long an endpoint whose attempt timed out is not followed as a leader hint: about an
# election timeout, after which the followers either elected another leader or it is back.
SUSPECT_S = 1.0
MAX_IMMEDIATE_REDIRECTS = 3

_T = TypeVar("_T")
_Req_co = TypeVar("_Req_co", covariant=True)


class Renewable(Protocol[_Req_co]):
    """A mutation's request id as the loop needs it (_lanes.Lease is the implementation)."""

    @property
    def request(self) -> _Req_co: ...

    @property
    def renewed(self) -> bool: ...

    def forgotten(self, epoch_ms: int | None) -> None: ...

    def renew(self) -> _Req_co: ...


def backoff_delay_s(retries: int) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**retries)]."""
    return random.uniform(0.0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** min(retries, 16)))


@dataclass(frozen=True, slots=True)
class Step:
    """After a failed attempt: raise `error` (from that attempt's exception) and stop, or
    attempt again after `pause_s` (0: at once; a driver wakes early when the client closes)."""

    error: SessionQuorumError | None = None
    pause_s: float = 0.0


class RetryState:
    """The decisions of one call's retry loop; see the module docstring. Not thread-safe:
    one per call, used by the driver running that call."""

    def __init__(
        self,
        router: Router,
        call: Call[Any],
        *,
        timeout_s: float,
        attempt_timeout_s: float,
        lease: Renewable[Any] | None,
        closing: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._router = router
        self._call = call
        self._timeout_s = timeout_s
        self._attempt_timeout_s = attempt_timeout_s
        self._lease = lease
        self._closing = closing
        self._clock = clock
        self._deadline = clock() + timeout_s
        # A call any node may serve starts at the next node in turn: reads spread out.
        self.endpoint = router.leader() if call.leader_only else router.spread()
        self.request: Any = call.request if lease is None else lease.request
        self.attempts = 0
        self.last: grpc.RpcError | None = None
        self._last_endpoint = self.endpoint
        self._maybe_applied = False
        self._retries = self._redirects = 0
        # Endpoints whose attempt timed out in this call, until when they are distrusted.
        self._suspects: dict[str, float] = {}

    def _remaining_s(self) -> float:
        return self._deadline - self._clock()

    def next_attempt_s(self) -> float | None:
        """The next attempt's timeout, or None: out of time or closing, call give_up()."""
        remaining = self._remaining_s()
        if remaining <= 0 or (self.attempts > 0 and self._closing()):
            return None
        return min(remaining, self._attempt_timeout_s)

    def succeeded(self) -> None:
        self.attempts += 1
        if self._call.leader_only:
            self._router.confirm(self.endpoint)
        if self.attempts > 1:
            label = self._call.label
            logger.debug("%s: succeeded at %s after %d attempts", label, self.endpoint, self.attempts)

    def on_error(self, exc: grpc.RpcError) -> Step:
        """What the failed attempt `exc` (at `endpoint`, sending `request`) means for the call."""
        label, endpoint = self._call.label, self.endpoint
        self.attempts += 1
        self.last, self._last_endpoint = exc, endpoint
        verdict = classify(exc, mutation=self._call.mutation)
        logger.debug(
            "%s: attempt %d at %s failed: %s %s (node=%s, leader hint=%s)",
            label,
            self.attempts,
            endpoint,
            exc.code().name,
            exc.details(),
            verdict.node,
            verdict.leader_hint,
        )
        if verdict.action is Action.ANSWER:
            return Step(error_for_status(exc.code(), exc.details(), trailers=trailers(exc)))
        lease = self._lease
        if verdict.action is Action.EXPIRED:
            if lease is not None:
                lease.forgotten(verdict.epoch_ms)
            if self._maybe_applied or lease is None or lease.renewed or self._remaining_s() <= 0:
                return Step(self._expired())
            # Nothing of this call can exist anywhere: the same call under a client id that
            # the cluster cannot have forgotten. At once and to the same node, which just
            # answered as the leader.
            self.request = lease.renew()
            logger.info("%s: deduplication state expired; resent under a fresh client id", label)
            return Step()
        self._maybe_applied = self._maybe_applied or verdict.maybe_applied
        if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
            self._suspects[endpoint] = self._clock() + SUSPECT_S
        if self._remaining_s() <= 0:
            # Out of time. Stop here so that an attempt cut short by the caller's deadline
            # does not move the leader guess shared with other calls.
            return Step(self.give_up())
        self.endpoint, immediate = self._route(verdict)
        if immediate:
            return Step()
        pause = min(backoff_delay_s(self._retries), max(0.0, self._remaining_s()))
        self._retries += 1
        return Step(pause_s=pause)

    def _route(self, verdict: Verdict) -> tuple[str, bool]:
        """Where the next attempt goes: (endpoint, go without pause)."""
        endpoint, suspects, now = self.endpoint, self._suspects, self._clock()
        hint = verdict.leader_hint
        if hint and suspects.get(hint, 0.0) > now:
            # The followers still name a leader that just timed out (paused, or cut off):
            # they have not elected a new one yet. Ask around with backoff instead of waiting
            # out another attempt timeout on it.
            hint = None
        if verdict.action is Action.REDIRECT and hint and hint != endpoint:
            self._redirects += 1
            return self._router.follow_hint(hint), self._redirects <= MAX_IMMEDIATE_REDIRECTS
        if verdict.action is Action.SAME:
            self._redirects = 0
            return endpoint, False
        # NEXT, or a redirect without a usable hint. A redirect keeps counting, so nodes
        # pointing at each other during an election are visited with backoff.
        if verdict.action is not Action.REDIRECT:
            self._redirects = 0
        nxt = self._router.after_failure(endpoint)
        for _ in range(len(self._router.endpoints)):
            if suspects.get(nxt, 0.0) <= now:
                break
            nxt = self._router.after_failure(nxt)
        return nxt, False

    def give_up(self) -> SessionQuorumError:
        """The error for a call that ran out of time or was closed; raise it from `last`."""
        label, last, endpoint, attempts = self._call.label, self.last, self._last_endpoint, self.attempts
        why = (
            "the client was closed" if self._closing() else f"no definite answer within {self._timeout_s:g} s"
        )
        code = grpc.StatusCode.DEADLINE_EXCEEDED if last is None else last.code()
        if self._maybe_applied:
            # Not the last node's own words: they describe only the last attempt ("nothing
            # was applied" by it) and would contradict the verdict. They stay on __cause__.
            last_seen = "" if last is None else f", last {code.name} from {endpoint}"
            message = (
                f"{label}: outcome unknown: {why} ({attempts} attempts{last_seen}); "
                "an attempt may have been applied"
            )
        else:
            details = "" if last is None else f"; last from {endpoint}: {code.name}: {last.details()}"
            message = f"{label}: {why} ({attempts} attempts){details}"
        logger.info("%s", message)
        return self._with_token(error_for_status(code, message, maybe_applied=self._maybe_applied))

    def _expired(self) -> SessionQuorumError:
        """The error for a refusal that cannot go on under a fresh client id."""
        label, endpoint, attempts = self._call.label, self.endpoint, self.attempts
        if self._maybe_applied:
            message = (
                f"{label}: {DEDUP_EXPIRED_PREFIX}: the cluster may have forgotten this call's request "
                f"id, so it refused a retry instead of risking a second apply; an earlier attempt may "
                f"have been applied ({attempts} attempts, last from {endpoint})"
            )
        else:
            message = (
                f"{label}: nothing was applied: every attempt was refused or failed before it could "
                f"apply, the last because the cluster's deduplication state expired ({attempts} "
                f"attempts, last from {endpoint})"
            )
        logger.info("%s", message)
        error = error_for_status(grpc.StatusCode.UNKNOWN, message, maybe_applied=self._maybe_applied)
        return self._with_token(error)

    def _with_token(self, error: SessionQuorumError) -> SessionQuorumError:
        # A create or rotate that may have applied: without its token that session could
        # be reached by no one (see OutcomeUnknown.token).
        if isinstance(error, OutcomeUnknown):
            error.token = self._call.token
        return error


class Caller:
    """The driver for threads: runs calls against the cluster; shared by all threads of a client."""

    def __init__(
        self, router: Router, channels: ChannelPool, *, attempt_timeout_s: float, coalesce: bool = True
    ) -> None:
        self._router = router
        self._channels = channels
        self._lanes = LanePool()
        self._attempt_timeout_s = attempt_timeout_s
        self._coalesce = coalesce
        self._coalescers: dict[str, Coalescer] = {}
        self._coalescers_lock = threading.Lock()
        # Set by close(): wakes every backoff at once so close() does not wait them out.
        self._closing = threading.Event()

    def close(self) -> None:
        self._closing.set()

    def reset_after_fork(self) -> None:
        """In a forked child: fresh request ids, no coalescer, fresh locks (see _fork.py).

        The inherited coalescers count the parent's calls in their slots and queues (the
        child would wait for answers that go to the parent), and any lock or event here
        may have been held by a parent thread at the fork.
        """
        self._lanes.reset_after_fork()
        self._coalescers = {}
        self._coalescers_lock = threading.Lock()
        closing = threading.Event()
        if self._closing.is_set():
            closing.set()
        self._closing = closing

    def run(self, call: Call[_T], timeout_s: float) -> _T:
        """Run `call` until a definite answer or the deadline; a mutation under a leased request id."""
        if not call.mutation:
            return call.read(self._attempts(call, timeout_s, None))
        with self._lanes.lease(call.request) as lease:
            return call.read(self._attempts(call, timeout_s, lease))

    def _attempts(self, call: Call[Any], timeout_s: float, lease: Renewable[Any] | None) -> Any:
        state = RetryState(
            self._router,
            call,
            timeout_s=timeout_s,
            attempt_timeout_s=self._attempt_timeout_s,
            lease=lease,
            closing=self._closing.is_set,
        )
        while (attempt_s := state.next_attempt_s()) is not None:
            try:
                response = self._attempt(call, state.endpoint, state.request, attempt_s)
            except ClientClosedError:
                if state.attempts == 0:
                    raise
                break
            except grpc.RpcError as exc:
                step = state.on_error(exc)
                if step.error is not None:
                    raise step.error from exc
                if step.pause_s > 0:
                    self._closing.wait(step.pause_s)
                continue
            state.succeeded()
            return response
        raise state.give_up() from state.last

    def _attempt(self, call: Call[Any], endpoint: str, request: Any, timeout_s: float) -> Any:
        rpc = getattr(self._channels.stub(endpoint), call.method)

        def direct() -> Any:
            try:
                return rpc(request, timeout=timeout_s)
            except ValueError as exc:
                # gRPC refuses to start a call on a channel that close() shut a moment ago.
                if self._closing.is_set():
                    raise ClientClosedError("the SessionClient is closed") from exc
                raise

        if call.batch_kind is None or not self._coalesce:
            return direct()
        return self._coalescer(endpoint).call(call.batch_kind, request, timeout_s, direct)

    def _coalescer(self, endpoint: str) -> Coalescer:
        with self._coalescers_lock:
            found = self._coalescers.get(endpoint)
            if found is None:
                found = self._coalescers[endpoint] = Coalescer(lambda: self._channels.stub(endpoint))
            return found

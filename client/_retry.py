"""The retry loop: one logical call, many attempts, one overall deadline.

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
from typing import TYPE_CHECKING, Protocol, TypeAlias, TypeVar

import grpc

from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

from ._channels import ChannelPool, ClientClosedError
from ._coalesce import Coalescer
from ._errors import SessionQuorumError, error_for_status
from ._routing import DEDUP_EXPIRED_PREFIX, Action, Router, Verdict, classify, trailers

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.020
BACKOFF_MAX_S = 0.500
# How long an endpoint whose attempt timed out is not followed as a leader hint: about an
# election timeout, after which the followers either elected another leader or it is back.
SUSPECT_S = 1.0
MAX_IMMEDIATE_REDIRECTS = 3

_Req = TypeVar("_Req")
_Req_co = TypeVar("_Req_co", covariant=True)
_Resp = TypeVar("_Resp")
if TYPE_CHECKING:
    # Picks the method off a stub, e.g. `lambda stub: stub.Create`. Only for the type
    # checker: grpc's runtime classes are not generic.
    RpcPicker: TypeAlias = Callable[[pb_grpc.SessionStoreStub], grpc.UnaryUnaryMultiCallable[_Req, _Resp]]


class Renewable(Protocol[_Req_co]):
    """A mutation's request id as the loop needs it (_lanes.Lease is the implementation)."""

    @property
    def renewed(self) -> bool: ...

    def forgotten(self, epoch_ms: int | None) -> None: ...

    def renew(self) -> _Req_co: ...


def backoff_delay_s(retries: int) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**retries)]."""
    return random.uniform(0.0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** min(retries, 16)))


class Caller:
    """Runs calls against the cluster; shared by all threads of one client."""

    def __init__(
        self, router: Router, channels: ChannelPool, *, attempt_timeout_s: float, coalesce: bool = True
    ) -> None:
        self._router = router
        self._channels = channels
        self._attempt_timeout_s = attempt_timeout_s
        self._coalesce = coalesce
        self._coalescers: dict[str, Coalescer] = {}
        self._coalescers_lock = threading.Lock()
        # Set by close(): wakes every backoff at once so close() does not wait them out.
        self._closing = threading.Event()

    def close(self) -> None:
        self._closing.set()

    def call(
        self,
        label: str,
        pick: RpcPicker[_Req, _Resp],
        request: _Req,
        *,
        mutation: bool,
        leader_only: bool,
        timeout_s: float,
        lease: Renewable[_Req] | None = None,
        batch_kind: str | None = None,
    ) -> _Resp:
        """Send `request` until a definite answer or the deadline; see the module docstring.

        `label` names the call in logs; it must not contain a token (a hash prefix is fine).
        `lease` is the mutation's request id (its `request` is `request`); without one, a
        refusal for a forgotten request id cannot move to a fresh client id. `batch_kind`
        (a BatchItem field name) lets the attempt travel in a Batch with concurrent calls.
        """
        deadline = time.monotonic() + timeout_s
        # A call any node may serve starts at the next node in turn: reads spread out.
        endpoint = self._router.leader() if leader_only else self._router.spread()
        maybe_applied = False
        attempts = retries = redirects = 0
        last: grpc.RpcError | None = None
        last_endpoint = endpoint
        # Endpoints whose attempt timed out in this call, until when they are distrusted.
        suspects: dict[str, float] = {}
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (attempts > 0 and self._closing.is_set()):
                break
            try:
                attempt_s = min(remaining, self._attempt_timeout_s)
                response = self._attempt(pick, endpoint, request, attempt_s, batch_kind)
            except ClientClosedError:
                if attempts == 0:
                    raise
                break
            except grpc.RpcError as exc:
                attempts += 1
                last, last_endpoint = exc, endpoint
                verdict = classify(exc, mutation=mutation)
                logger.debug(
                    "%s: attempt %d at %s failed: %s %s (node=%s, leader hint=%s)",
                    label,
                    attempts,
                    endpoint,
                    exc.code().name,
                    exc.details(),
                    verdict.node,
                    verdict.leader_hint,
                )
                if verdict.action is Action.ANSWER:
                    raise error_for_status(exc.code(), exc.details(), trailers=trailers(exc)) from exc
                if verdict.action is Action.EXPIRED:
                    if lease is not None:
                        lease.forgotten(verdict.epoch_ms)
                    if maybe_applied or lease is None or lease.renewed or deadline - time.monotonic() <= 0:
                        raise self._expired(label, endpoint, attempts, maybe_applied) from exc
                    # Nothing of this call can exist anywhere: the same call under a client
                    # id that the cluster cannot have forgotten. At once and to the same
                    # node, which just answered as the leader.
                    request = lease.renew()
                    logger.info("%s: deduplication state expired; resent under a fresh client id", label)
                    continue
                maybe_applied = maybe_applied or verdict.maybe_applied
                if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                    suspects[endpoint] = time.monotonic() + SUSPECT_S
                if deadline - time.monotonic() <= 0:
                    # Out of time. Stop here so that an attempt cut short by the caller's
                    # deadline does not move the leader guess shared with other threads.
                    break
                endpoint, redirects, immediate = self._route(verdict, endpoint, redirects, suspects)
                if immediate:
                    continue
                pause = min(backoff_delay_s(retries), max(0.0, deadline - time.monotonic()))
                retries += 1
                if self._closing.wait(pause):
                    break
                continue
            attempts += 1
            if leader_only:
                self._router.confirm(endpoint)
            if attempts > 1:
                logger.debug("%s: succeeded at %s after %d attempts", label, endpoint, attempts)
            return response
        raise self._gave_up(label, last, last_endpoint, attempts, timeout_s, maybe_applied) from last

    def _attempt(
        self, pick: RpcPicker[_Req, _Resp], endpoint: str, request: _Req, timeout_s: float, kind: str | None
    ) -> _Resp:
        rpc = pick(self._channels.stub(endpoint))

        def direct() -> _Resp:
            try:
                return rpc(request, timeout=timeout_s)
            except ValueError as exc:
                # gRPC refuses to start a call on a channel that close() shut a moment ago.
                if self._closing.is_set():
                    raise ClientClosedError("the SessionClient is closed") from exc
                raise

        if kind is None or not self._coalesce:
            return direct()
        response: _Resp = self._coalescer(endpoint).call(kind, request, timeout_s, direct)
        return response

    def _coalescer(self, endpoint: str) -> Coalescer:
        with self._coalescers_lock:
            found = self._coalescers.get(endpoint)
            if found is None:
                found = self._coalescers[endpoint] = Coalescer(lambda: self._channels.stub(endpoint))
            return found

    def _route(
        self, verdict: Verdict, endpoint: str, redirects: int, suspects: dict[str, float]
    ) -> tuple[str, int, bool]:
        """Where the next attempt goes: (endpoint, consecutive redirects, go without pause)."""
        hint = verdict.leader_hint
        if hint and suspects.get(hint, 0.0) > time.monotonic():
            # The followers still name a leader that just timed out (paused, or cut off):
            # they have not elected a new one yet. Ask around with backoff instead of waiting
            # out another attempt timeout on it.
            hint = None
        if verdict.action is Action.REDIRECT and hint and hint != endpoint:
            redirects += 1
            return self._router.follow_hint(hint), redirects, redirects <= MAX_IMMEDIATE_REDIRECTS
        if verdict.action is Action.SAME:
            return endpoint, 0, False
        # NEXT, or a redirect without a usable hint. A redirect keeps counting, so nodes
        # pointing at each other during an election are visited with backoff.
        redirects = redirects if verdict.action is Action.REDIRECT else 0
        nxt = self._router.after_failure(endpoint)
        for _ in range(len(self._router.endpoints)):
            if suspects.get(nxt, 0.0) <= time.monotonic():
                break
            nxt = self._router.after_failure(nxt)
        return nxt, redirects, False

    def _gave_up(
        self,
        label: str,
        last: grpc.RpcError | None,
        endpoint: str,
        attempts: int,
        timeout_s: float,
        maybe_applied: bool,
    ) -> SessionQuorumError:
        why = (
            "the client was closed"
            if self._closing.is_set()
            else f"no definite answer within {timeout_s:g} s"
        )
        code = grpc.StatusCode.DEADLINE_EXCEEDED if last is None else last.code()
        if maybe_applied:
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
        return error_for_status(code, message, maybe_applied=maybe_applied)

    @staticmethod
    def _expired(label: str, endpoint: str, attempts: int, maybe_applied: bool) -> SessionQuorumError:
        """The error for a refusal that cannot go on under a fresh client id."""
        if maybe_applied:
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
        return error_for_status(grpc.StatusCode.UNKNOWN, message, maybe_applied=maybe_applied)

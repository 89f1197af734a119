"""Where to send the next attempt: the shared leader guess, and what a failed attempt means.

Two small pieces, both free of timing so they can be tested without a network:

- `Router` holds the endpoint list and the index of the node believed to lead. It is
  shared by all threads; whatever one call learns (a leader hint, a dead node) helps the
  next call of every thread.
- `classify` reads one failed attempt (status code plus the trailing metadata the node
  adds) and says whether to stop, where to go next, and whether the attempt may have been
  applied. The node marks every status *it* produced with `sq-node`, which is how an
  UNAVAILABLE from a node without a leader (nothing applied) is told apart from an
  UNAVAILABLE made by gRPC when the connection broke (the node may have applied it).
  An UNKNOWN carrying `sq-epoch` is the one refusal that must never be retried with the
  same request id: the node may have forgotten that id's exactly-once entry.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import grpc

logger = logging.getLogger(__name__)

# Trailing metadata the node sets (store/errors.py names the first LEADER_METADATA_KEY).
LEADER_METADATA_KEY = "sq-leader"
NODE_METADATA_KEY = "sq-node"
# On an UNKNOWN refusal: the cluster's time (ms) when the deduplication entry was missed.
EPOCH_METADATA_KEY = "sq-epoch"
# On FAILED_PRECONDITION: the cluster is mid-upgrade and cannot run this yet (a definite
# refusal, nothing applied), unlike "not the leader", which the same status also means.
UPGRADE_METADATA_KEY = "sq-upgrade"
# How the node's refusal message starts; a second signal in case a proxy drops trailers.
DEDUP_EXPIRED_PREFIX = "outcome unknown (deduplication state expired)"
# Hints may add endpoints the caller did not list (a node added to the cluster); a bound
# keeps a confused or hostile node from growing the list without end.
MAX_ENDPOINTS = 64


class Action(enum.Enum):
    ANSWER = "answer"  # a definite answer: raise it, no retry
    REDIRECT = "redirect"  # not the leader: follow the hint, else the next endpoint
    NEXT = "next"  # this node cannot serve now: try the next endpoint
    SAME = "same"  # outcome unknown at a live node: retry it with the same request id
    # The node may have forgotten this request id's exactly-once entry and did not apply
    # it: never resend this id; only a call none of whose attempts may have been applied
    # can go on, under a fresh client id.
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    maybe_applied: bool
    leader_hint: str | None
    node: str | None
    # With EXPIRED: the cluster time the node reported, for the next client ids' epoch.
    epoch_ms: int | None = None


def trailers(exc: grpc.RpcError) -> dict[str, str]:
    """The node's trailing metadata as text; empty values are left out."""
    # trailing_metadata() is None for errors gRPC made before any response arrived. Items
    # are (key, value) pairs (named tuples in grpc, plain tuples in grpc.aio's Metadata);
    # values are str except for "-bin" keys.
    found: dict[str, str] = {}
    for item in exc.trailing_metadata() or ():
        key, value = cast("tuple[str, object]", item)  # the stubs know only the named tuple
        text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
        if text:
            found[key] = text
    return found


def _epoch_ms(found: Mapping[str, str]) -> int | None:
    text = found.get(EPOCH_METADATA_KEY)
    if text is None:
        return None
    try:
        epoch_ms = int(text)
    except ValueError:
        epoch_ms = -1
    if epoch_ms < 0:
        logger.warning("ignoring malformed %s trailer %r", EPOCH_METADATA_KEY, text)
        return None
    return epoch_ms


def classify(exc: grpc.RpcError, *, mutation: bool) -> Verdict:
    """Decide what one failed attempt means; `mutation` is False for reads.

    A read has no effect, so for it nothing is ever "maybe applied" and every transient
    status is simply retried.
    """
    code = exc.code()
    found = trailers(exc)
    node = found.get(NODE_METADATA_KEY)
    if code is grpc.StatusCode.FAILED_PRECONDITION and UPGRADE_METADATA_KEY in found:
        return Verdict(Action.ANSWER, False, None, node)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return Verdict(Action.REDIRECT, False, found.get(LEADER_METADATA_KEY), node)
    if code is grpc.StatusCode.UNAVAILABLE:
        # With sq-node: the node answered "no leader", nothing was proposed. Without it:
        # refused, reset or closed mid-call; the request may have reached the leader first.
        return Verdict(Action.NEXT, mutation and node is None, None, node)
    if (
        mutation
        and code is grpc.StatusCode.UNKNOWN
        and (EPOCH_METADATA_KEY in found or (exc.details() or "").startswith(DEDUP_EXPIRED_PREFIX))
    ):
        # This attempt was refused, not applied; what earlier attempts did is for the
        # retry loop to weigh.
        return Verdict(Action.EXPIRED, False, None, node, _epoch_ms(found))
    if code is grpc.StatusCode.UNKNOWN:
        # The node is alive and said it cannot know (leader change, commit timeout); if it
        # lost leadership meanwhile, the retry is redirected.
        return Verdict(Action.SAME, mutation, None, node)
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        # The node may be hung or cut off; a follower elsewhere will point at the leader,
        # and the same request id makes the repeat harmless if this one did commit.
        return Verdict(Action.NEXT, mutation, None, node)
    return Verdict(Action.ANSWER, False, None, node)


class Router:
    """Thread-safe endpoint list plus the current leader guess (shared by sync and async calls)."""

    def __init__(self, endpoints: Sequence[str]) -> None:
        if isinstance(endpoints, str):
            raise TypeError("endpoints must be a sequence of 'host:port' strings, not one str")
        unique = list(dict.fromkeys(endpoints))
        if not unique:
            raise ValueError("at least one endpoint is required")
        if not all(isinstance(e, str) and e for e in unique):
            raise ValueError("every endpoint must be a non-empty 'host:port' string")
        self._lock = threading.Lock()
        self._endpoints = unique
        self._leader = unique[0]
        self._turn = 0

    def reset_after_fork(self) -> None:
        """In a forked child: a parent thread may have held the lock; the guess stays valid."""
        self._lock = threading.Lock()

    @property
    def endpoints(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._endpoints)

    def leader(self) -> str:
        with self._lock:
            return self._leader

    def spread(self) -> str:
        """The next endpoint in turn, for a call any node may serve (reads spread over nodes)."""
        with self._lock:
            self._turn = (self._turn + 1) % len(self._endpoints)
            return self._endpoints[self._turn]

    def confirm(self, endpoint: str) -> None:
        """A leader-only call succeeded at `endpoint`: it leads (or did a moment ago)."""
        with self._lock:
            self._leader = endpoint

    def follow_hint(self, hint: str) -> str:
        """Take the leader's address from a follower; return where to go next."""
        with self._lock:
            if hint not in self._endpoints:
                if len(self._endpoints) < MAX_ENDPOINTS:
                    logger.info("learned endpoint %s from a leader hint", hint)
                    self._endpoints.append(hint)
                else:
                    logger.warning("leader hint %s not added: already %d endpoints", hint, MAX_ENDPOINTS)
            self._leader = hint
            return hint

    def replace_members(self, endpoints: Sequence[str]) -> None:
        """The cluster's members now (a leader's Status): nodes removed since are dropped,
        added ones taken (at most MAX_ENDPOINTS). The leader guess stays if still a member."""
        unique = [e for e in dict.fromkeys(endpoints) if isinstance(e, str) and e][:MAX_ENDPOINTS]
        if not unique:
            return
        with self._lock:
            if unique != self._endpoints:
                logger.info("members now: %s", ", ".join(unique))
            self._endpoints = unique
            if self._leader not in unique:
                self._leader = unique[0]
            self._turn %= len(unique)

    def after_failure(self, failed: str) -> str:
        """`failed` could not serve; return the endpoint to try next.

        If another thread already moved the guess away from `failed`, its newer knowledge
        wins; otherwise the guess moves to the next endpoint in the list (round robin).
        """
        with self._lock:
            if self._leader != failed:
                return self._leader
            try:
                index = self._endpoints.index(failed)
            except ValueError:
                index = -1
            self._leader = self._endpoints[(index + 1) % len(self._endpoints)]
            return self._leader

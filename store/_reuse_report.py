"""Reports a reuse of a rotated-away token that a read met (reads are not log entries).

A Validate that finds a rotated-away token past its grace answers NOT_FOUND like any
unknown token, and proposes one small `ReuseDetected` command so the reuse is recorded (and,
with `revoke_on_reuse`, the session the token was rotated into ends) at one log index on
every node. Bounded: a node has at most `MAX_IN_FLIGHT` such proposals pending, one per
token hash; apply marks the tombstone reported, after which reads stop proposing (a replayed
stolen token costs one log entry, not one per attempt).
"""

from __future__ import annotations

import logging

from . import commands as c
from .errors import StoreError
from .raft import ReplicatedLog

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 256


class ReuseReporter:
    def __init__(self, raft: ReplicatedLog, timeout_s: float) -> None:
        self._raft = raft
        self._timeout_s = timeout_s
        self._pending: set[bytes] = set()  # membership only, never iterated
        self.dropped = 0  # reports skipped because MAX_IN_FLIGHT were pending

    async def report(self, token_hash: bytes, now_ms: int) -> None:
        """Propose ReuseDetected (from any node: a follower's is forwarded); never raises."""
        if token_hash in self._pending:
            return
        if len(self._pending) >= MAX_IN_FLIGHT:
            self.dropped += 1
            return
        self._pending.add(token_hash)
        entry = c.encode(c.Command(c.ReuseDetected(token_hash), now_ms=now_ms))
        try:
            reply = await self._raft.propose_anywhere(entry, self._timeout_s)
            if reply.count:
                log.warning(
                    "a rotated-away session token was used after its grace (possible theft); "
                    "revoked session(s): %s",
                    ", ".join(reply.handles) or "none",
                )
        except StoreError as exc:
            log.info("reporting a token reuse not confirmed: %s", exc.message)
        finally:
            self._pending.discard(token_hash)

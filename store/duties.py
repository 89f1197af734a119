"""A node's background duties: readiness, its command level, the cluster's limits, expiry.

Each is a loop that ends when the node stops (`stop` is set) and never raises: a duty that
cannot do its work now logs one line and tries again on its next round.

- `become_ready`: a node reports SERVING (health, and STALE reads) only once it applied
  everything that was committed when it started, so a restarted node never answers
  NotFound for live sessions from a half-replayed journal.
- `advertise_level`: every node records in the log the highest command level it applies
  (commands.MemberLevel); the leader proposes nothing above the lowest one, so a rolling
  upgrade never hands an old node an entry it cannot apply.
- `seed_limits`: the first leader of a new cluster proposes the limits of its file as the
  cluster's replicated limits (commands.Configure). Afterwards the file's section is only a
  seed: a node whose file disagrees says so once, and apply keeps using the log's.
- `enable_events`: once every member applies command level 5, the leader switches the
  lifecycle event ring on with its file's bounds (commands.EnableEvents), once.
- `switch_on_security_ops`: once every member advertised level 5, the leader proposes
  `SecurityOn`, from which removals leave tombstones (store/secops.py).
- `sweep_expired`: the leader proposes bounded expire commands when a deadline passed.
- `watch_leader`: health goes NOT_SERVING while this node hears no leader (it lost
  quorum, or its side of a partition has none), and back once it hears one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from . import commands as c
from .clock import ProposerClock
from .config import NodeConfig, limits_to_wire
from .errors import StoreError
from .raft import ReplicatedLog
from .service import cluster_level
from .state import SessionMachine

log = logging.getLogger(__name__)

# How often a duty looks again while it waits for something (a leader, an apply).
POLL_S = 0.05
# How long one proposal of a duty may take before the duty tries again.
PROPOSE_TIMEOUT_S = 10.0
# Propose a sweep at least this often even when no deadline is due, so the exactly-once
# table's TTL is enforced on a quiet cluster too.
IDLE_SWEEP_EVERY_S = 60.0
# A node without a leader for this many maximum election timeouts reports NOT_SERVING.
# One is what a healthy failover costs its followers; health must not flap on every one.
LEADERLESS_ELECTION_TIMEOUTS = 2


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def become_ready(
    raft: ReplicatedLog, stop: asyncio.Event, on_ready: Callable[[], Awaitable[None]]
) -> None:
    """Wait to hear a leader's commit index, then until this node applied that far.

    The leader's index, not this node's own: an emptied or long-down follower's own commit
    index says nothing of what the cluster committed (it would be "ready" at index 1).
    """
    target: int | None = None
    while not stop.is_set():
        st = raft.status()
        if target is None and st.leader_commit_index is not None:
            target = st.leader_commit_index
            log.info("catching up to the leader's commit index %d (applied %d)", target, st.last_applied)
        if target is not None and st.last_applied >= target:
            log.info("ready: applied %d, committed at start %d", st.last_applied, target)
            await on_ready()
            return
        await _pause(stop, POLL_S)


async def advertise_level(config: NodeConfig, raft: ReplicatedLog, stop: asyncio.Event) -> None:
    """Record this node's command level in the log, once per start (again if it changed)."""
    node_id, level = config.node.id, config.command_level
    # Time 0: a follower's clock is not the cluster's; apply keeps the time it has.
    entry = c.encode(c.Command(c.MemberLevel(node_id, level), now_ms=0))
    while not stop.is_set():
        if raft.read(lambda m: m.member_levels.get(node_id)) == level:
            return
        if raft.status().leader_raft_address is not None:
            try:
                await raft.propose_anywhere(entry, PROPOSE_TIMEOUT_S)
                continue
            except StoreError as exc:
                log.info("advertising command level %d not confirmed: %s", level, exc.message)
        await _pause(stop, 1.0)


def _level(config: NodeConfig, ids: list[str]) -> Callable[[SessionMachine], int]:
    return lambda m: cluster_level(m, config, ids)


async def _propose_once(
    config: NodeConfig,
    raft: ReplicatedLog,
    clock: ProposerClock,
    stop: asyncio.Event,
    op: c.Op,
    *,
    level: int,
    done: Callable[[SessionMachine], bool],
    what: str,
) -> bool:
    """Until `done` holds in the applied state: on the leader, once every member applies
    `level`, propose `op` (a replicated switch, so every node starts it at the same entry and
    an older member never meets it). Every node returns True once it applied it; False if
    the node stops first."""
    while not stop.is_set():
        if raft.read(done):
            return True
        if raft.is_leader() and raft.read(_level(config, raft.member_ids())) >= level:
            entry = c.encode(c.Command(op, now_ms=clock.stamp(raft.term())))
            try:
                await raft.propose(entry, PROPOSE_TIMEOUT_S)
                log.info("%s", what)
                continue
            except StoreError as exc:
                log.info("%s: not confirmed: %s", what, exc.message)
        await _pause(stop, 0.5)
    return False


async def seed_limits(
    config: NodeConfig, raft: ReplicatedLog, clock: ProposerClock, stop: asyncio.Event
) -> None:
    """On a new cluster's leader, propose the file's limits; elsewhere, report a disagreement."""
    seed = config.cluster.limits
    op = c.Configure(limits_to_wire(seed), seed=True)
    # Level 5 if the file sets a level-5 limit (commands.LATER_LIMITS), else level 2.
    level = c.level_of(c.Command(op, now_ms=0))
    what = f"seeded the cluster's replicated limits from {config.cluster.source or 'the config'}"
    configured = await _propose_once(
        config, raft, clock, stop, op, level=level, done=lambda m: m.configured, what=what
    )
    if configured and raft.read(lambda m: m.limits) != seed:
        log.warning(
            "the limits in this node's cluster.json differ from the cluster's replicated limits; "
            "the replicated ones apply (change them with "
            "`python -m sessionquorum.cluster config set`)"
        )


async def enable_events(
    config: NodeConfig, raft: ReplicatedLog, clock: ProposerClock, stop: asyncio.Event
) -> None:
    """Once the cluster is at EVENTS_LEVEL, switch the lifecycle event ring on (EnableEvents,
    a seed, once): every node starts its ring at the same entry, so cursors agree."""
    server = config.cluster.server
    op = c.EnableEvents(server.events_retention_count, server.events_retention_bytes)
    what = f"lifecycle events enabled ({op.max_count} events, {op.max_bytes} bytes retained)"
    on = await _propose_once(
        config, raft, clock, stop, op, level=c.EVENTS_LEVEL, done=lambda m: m.lifecycle is not None, what=what
    )
    bounds = raft.read(
        lambda m: None if m.lifecycle is None else (m.lifecycle.max_count, m.lifecycle.max_bytes)
    )
    if on and bounds != (op.max_count, op.max_bytes):
        log.warning(
            "server.events_retention_* in this node's cluster.json differ from the cluster's "
            "replicated event retention %s; the replicated one applies",
            bounds,
        )


async def switch_on_security_ops(
    config: NodeConfig, raft: ReplicatedLog, clock: ProposerClock, stop: asyncio.Event
) -> None:
    """Once every member applies level 5, switch the level-5 rules on (store/secops.py)."""
    what = f"session-security operations (command level {c.SECURITY_OPS_LEVEL}) are on"
    await _propose_once(
        config,
        raft,
        clock,
        stop,
        c.SecurityOn(),
        level=c.SECURITY_OPS_LEVEL,
        done=lambda m: m.sec.active,
        what=what,
    )


async def sweep_expired(
    config: NodeConfig, raft: ReplicatedLog, clock: ProposerClock, stop: asyncio.Event
) -> None:
    """On the leader, propose bounded expire commands when a deadline has passed."""
    server = config.cluster.server
    last = 0.0
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        await _pause(stop, server.sweep_interval_s)
        if stop.is_set() or not raft.is_leader():
            continue
        now = clock.stamp(raft.term())
        due, batch = raft.read(lambda m: (m.next_deadline_ms(), m.limits.expire_batch))
        if (due is None or due > now) and loop.time() - last < IDLE_SWEEP_EVERY_S:
            continue
        last = loop.time()
        try:
            reply = await raft.propose(c.encode(c.Command(c.Expire(batch), now_ms=now)), PROPOSE_TIMEOUT_S)
            if reply.count:
                log.info("expired %d session(s)", reply.count)
        except StoreError as exc:
            log.info("expiry sweep not confirmed: %s", exc.message)


def leaderless_window_s(config: NodeConfig) -> float:
    return LEADERLESS_ELECTION_TIMEOUTS * config.cluster.raft.election_max_s


async def watch_leader(
    config: NodeConfig, raft: ReplicatedLog, stop: asyncio.Event, on_change: Callable[[bool], Awaitable[None]]
) -> None:
    """Report (`on_change`) whether this node leads or heard its leader lately, when that flips.

    Starts from False: a node has heard no leader when it starts (readiness waits anyway).
    """
    window_s = leaderless_window_s(config)
    heard = False
    while not stop.is_set():
        now = raft.leader_heard_within(window_s)
        if now != heard:
            heard = now
            if heard:
                log.info("a leader is heard (term %d)", raft.term())
            else:
                log.warning(
                    "no leader heard for %.1f s (no quorum on this side?): health NOT_SERVING until one is",
                    window_s,
                )
            await on_change(heard)
        await _pause(stop, POLL_S)

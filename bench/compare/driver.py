"""Running one cell: N concurrent clients call a target in a loop for a fixed time.

An asyncio target gets N tasks on this process's event loop; a synchronous target gets N
threads sharing one client. Either way each call is timed with perf_counter around it, so a
latency includes the client library's own work (and, for threads, the wait for the GIL).
Errors are counted by name, never fatal: one failing call must not end a measurement, and
any error is a finding to report. Every worker stops by itself when the cell's time is up;
one stuck past its call timeout is cancelled (tasks) or abandoned (daemon threads) after a
grace period, so a cell always ends.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .procs import cpu_seconds
from .workload import OP_TIMEOUT_S, AsyncTarget, Mix, Op, SyncTarget, new_value

GRACE_S = OP_TIMEOUT_S + 2.0
POOL_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed cell; `ops` counts successful calls only. CPU figures are seconds in the cell."""

    target: str
    mix: str
    clients: int
    repetition: int
    elapsed_s: float
    ops: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    stuck_workers: int
    client_cpu_s: float
    server_cpu_s: float
    server_cpu_max_s: float


@dataclass(frozen=True, slots=True)
class CellPlan:
    """What one cell runs: the mix, N clients, how long, on which warm-up keys, measuring which servers."""

    mix: Mix
    clients: int
    repetition: int
    duration_s: float
    warmup_s: float
    keys: Sequence[bytes]
    server_pids: Sequence[int]
    seed: int


@dataclass(slots=True)
class _Worker:
    latencies: list[float]
    errors: Counter[str]
    # Warm-up only: go on past the phase's end until one call ended (bounded by OP_TIMEOUT_S
    # more). Opening a connection can take seconds when N clients open theirs at once (a
    # TLS handshake each, and redis-py loads the certificates per connection); that belongs
    # to the warm-up, not to the timed phase.
    needs_one_call: bool = False

    def goes_on(self, now: float, stop_at: float) -> bool:
        if now < stop_at:
            return True
        ended_one = bool(self.latencies) or bool(self.errors)
        return self.needs_one_call and not ended_one and now < stop_at + OP_TIMEOUT_S


def error_name(exc: BaseException) -> str:
    """The exception's type, with the gRPC status code when it has one (AioRpcError alone says little)."""
    code = getattr(exc, "code", None)
    if callable(code):
        try:
            return f"{type(exc).__name__}:{getattr(code(), 'name', code())}"
        except Exception:  # a name for the error table is all we want here
            pass
    return type(exc).__name__


def percentile_ms(sorted_s: Sequence[float], q: float) -> float:
    """Nearest-rank percentile in milliseconds; NaN when nothing succeeded."""
    if not sorted_s:
        return math.nan
    return sorted_s[max(1, math.ceil(q * len(sorted_s))) - 1] * 1000.0


class _CpuMeter:
    """CPU seconds used by this process and by the servers' processes between start and stop."""

    def __init__(self, server_pids: Sequence[int]) -> None:
        self._pids = list(server_pids)
        self._client = cpu_seconds("self") or 0.0
        self._servers = {pid: cpu_seconds(pid) or 0.0 for pid in self._pids}

    def stop(self) -> tuple[float, float, float]:
        client = (cpu_seconds("self") or 0.0) - self._client
        # A process gone since the start (it crashed) counts up to what was last seen.
        deltas = [max(0.0, (cpu_seconds(pid) or before) - before) for pid, before in self._servers.items()]
        return client, sum(deltas), max(deltas, default=0.0)


def _sample(
    cell: tuple[str, str, int, int], workers: Sequence[_Worker], elapsed_s: float, stuck: int, cpu: _CpuMeter
) -> Sample:
    client_cpu, server_cpu, server_max = cpu.stop()
    merged = sorted(x for w in workers for x in list(w.latencies))
    errors: Counter[str] = Counter()
    for worker in workers:
        errors.update(dict(worker.errors))
    target, mix, clients, repetition = cell
    return Sample(
        target=target,
        mix=mix,
        clients=clients,
        repetition=repetition,
        elapsed_s=elapsed_s,
        ops=len(merged),
        ops_per_s=len(merged) / elapsed_s,
        p50_ms=percentile_ms(merged, 0.50),
        p99_ms=percentile_ms(merged, 0.99),
        errors=dict(sorted(errors.items())),
        stuck_workers=stuck,
        client_cpu_s=client_cpu,
        server_cpu_s=server_cpu,
        server_cpu_max_s=server_max,
    )


# -- asyncio targets ----------------------------------------------------------------------


async def _async_worker(
    target: AsyncTarget, mix: Mix, keys: Sequence[bytes], rng: random.Random, stop_at: float, out: _Worker
) -> None:
    while out.goes_on(started := time.perf_counter(), stop_at):
        op = mix.draw(rng)
        try:
            if op is Op.VALIDATE:
                await target.validate(rng.choice(keys))
            elif op is Op.CREATE:
                await target.create(new_value(rng))
            else:
                await target.update(rng.choice(keys), new_value(rng))
        except Exception as exc:  # counted, see the module docstring
            out.errors[error_name(exc)] += 1
            continue
        out.latencies.append(time.perf_counter() - started)


async def _async_phase(
    target: AsyncTarget, plan: CellPlan, duration_s: float, seed: int, warmup: bool = False
) -> tuple[list[_Worker], float, int]:
    workers = [_Worker([], Counter(), needs_one_call=warmup) for _ in range(plan.clients)]
    started = time.perf_counter()
    stop_at = started + duration_s
    tasks = [
        asyncio.create_task(
            _async_worker(target, plan.mix, plan.keys, random.Random(seed * 1_000 + i), stop_at, w)
        )
        for i, w in enumerate(workers)
    ]
    _, pending = await asyncio.wait(tasks, timeout=duration_s + GRACE_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return workers, time.perf_counter() - started, len(pending)


async def run_async_cell(target: AsyncTarget, plan: CellPlan) -> Sample:
    """A warm-up (discarded: connections, caches) and then the timed phase."""
    await _async_phase(target, plan, plan.warmup_s, -plan.seed - 1, warmup=True)
    cpu = _CpuMeter(plan.server_pids)
    workers, elapsed, stuck = await _async_phase(target, plan, plan.duration_s, plan.seed)
    return _sample((target.name, plan.mix.name, plan.clients, plan.repetition), workers, elapsed, stuck, cpu)


async def fill_pool_async(target: AsyncTarget, size: int, seed: int) -> tuple[list[bytes], dict[str, int]]:
    """Create `size` sessions before any timing; failures are counted, not retried."""
    rng = random.Random(seed)
    errors: Counter[str] = Counter()
    keys: list[bytes] = []
    gate = asyncio.Semaphore(POOL_CONCURRENCY)

    async def one() -> None:
        async with gate:
            try:
                keys.append(await target.create(new_value(rng)))
            except Exception as exc:  # counted and reported
                errors[error_name(exc)] += 1

    await asyncio.gather(*(one() for _ in range(size)))
    return keys, dict(errors)


# -- threaded targets ---------------------------------------------------------------------


def _sync_worker(
    target: SyncTarget, mix: Mix, keys: Sequence[bytes], rng: random.Random, stop_at: float, out: _Worker
) -> None:
    while out.goes_on(started := time.perf_counter(), stop_at):
        op = mix.draw(rng)
        try:
            if op is Op.VALIDATE:
                target.validate(rng.choice(keys))
            elif op is Op.CREATE:
                target.create(new_value(rng))
            else:
                target.update(rng.choice(keys), new_value(rng))
        except Exception as exc:  # counted, see the module docstring
            out.errors[error_name(exc)] += 1
            continue
        out.latencies.append(time.perf_counter() - started)


def _sync_phase(
    target: SyncTarget, plan: CellPlan, duration_s: float, seed: int, warmup: bool = False
) -> tuple[list[_Worker], float, int]:
    workers = [_Worker([], Counter(), needs_one_call=warmup) for _ in range(plan.clients)]
    started = time.perf_counter()
    stop_at = started + duration_s
    threads = [
        threading.Thread(
            target=_sync_worker,
            args=(target, plan.mix, plan.keys, random.Random(seed * 1_000 + i), stop_at, w),
            name=f"bench-{target.name}-{i}",
            daemon=True,  # a call stuck past its own timeout must not keep the process alive
        )
        for i, w in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    join_deadline = stop_at + GRACE_S
    for thread in threads:
        thread.join(max(0.0, join_deadline - time.perf_counter()))
    return workers, time.perf_counter() - started, sum(t.is_alive() for t in threads)


def run_sync_cell(target: SyncTarget, plan: CellPlan) -> Sample:
    """As run_async_cell, with threads."""
    _sync_phase(target, plan, plan.warmup_s, -plan.seed - 1, warmup=True)
    cpu = _CpuMeter(plan.server_pids)
    workers, elapsed, stuck = _sync_phase(target, plan, plan.duration_s, plan.seed)
    return _sample((target.name, plan.mix.name, plan.clients, plan.repetition), workers, elapsed, stuck, cpu)


def fill_pool_sync(target: SyncTarget, size: int, seed: int) -> tuple[list[bytes], dict[str, int]]:
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def one(i: int) -> bytes | None:
        try:
            return target.create(new_value(random.Random(seed * 1_000_003 + i)))
        except Exception as exc:  # counted and reported
            with lock:
                errors[error_name(exc)] += 1
            return None

    with ThreadPoolExecutor(POOL_CONCURRENCY, thread_name_prefix="bench-pool") as pool:
        keys = [k for k in pool.map(one, range(size)) if k is not None]
    return keys, dict(errors)

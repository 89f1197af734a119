"""The real store, in process: the node's gRPC service and state machine, without Raft.

`SessionService` and `SessionMachine` are the node's own; only the replicated log is a
stand-in that applies each proposed entry at once (a one-node cluster that never loses its
leadership), and the clock is the test's: `advance(seconds)` moves session time, so
expiry is tested without sleeping. The gRPC server listens on 127.0.0.1:0 in a thread of
its own with its own event loop, so sync and async clients (and framework test clients,
which run their own loops) all reach it as they would reach a node.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc

from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc
from sessionquorum.store import commands
from sessionquorum.store.clock import ProposerClock
from sessionquorum.store.config import ClusterConfig, Limits, NodeConfig, NodeSpec, limits_to_pairs
from sessionquorum.store.raft import ReplicatedLog
from sessionquorum.store.replies import Reply
from sessionquorum.store.service import SessionService
from sessionquorum.store.state import SessionMachine

_T = TypeVar("_T")
START_TIMEOUT_S = 10.0


class _OneNodeLog:
    """The parts of ReplicatedLog the service uses: apply on propose, always the leader."""

    def __init__(self, machine: SessionMachine) -> None:
        self.machine = machine
        self._lock = threading.Lock()
        self.applied = 0

    def apply(self, entry: bytes) -> Reply:
        with self._lock:
            self.applied += 1
            return self.machine.apply(entry)

    async def propose(self, entry: bytes, timeout_s: float) -> Reply:
        return self.apply(entry)

    async def propose_anywhere(self, entry: bytes, timeout_s: float) -> Reply:
        return self.apply(entry)

    async def read_index(self) -> int:
        return self.applied

    def read(self, fn: Callable[[SessionMachine], _T]) -> _T:
        with self._lock:
            return fn(self.machine)

    def is_leader(self) -> bool:
        return True

    def term(self) -> int:
        return 1

    def leader_raft_address(self) -> str | None:
        return None

    def member_ids(self) -> list[str]:
        return ["n1"]  # the one member (its level gates level-5 commands)

    # As ReplicatedLog.member_addresses (a property there): n1's Raft address.
    member_addresses = ("127.0.0.1:1",)

    def grpc_address_of(self, raft_address: str | None) -> str | None:
        return None


class _TestClock:
    """Session time that tests move: wall time at start, then only what `advance` adds."""

    def __init__(self) -> None:
        self.now_ms = int(time.time() * 1000)
        self.ahead_ms = 0

    def stamp(self, term: int) -> int:
        return self.now_ms


class InProcessStore:
    def __init__(self, data_dir: Path) -> None:
        machine = SessionMachine(Limits())
        self.log = _OneNodeLog(machine)
        self.clock = _TestClock()
        # A new cluster accepts writes only once its limits are in the log (duties.seed_limits).
        configure = commands.Configure(limits_to_pairs(Limits()), seed=True)
        self.log.apply(commands.encode(commands.Command(configure, now_ms=self.clock.now_ms)))
        # The one member advertises its level, as duties.advertise_level does on a node.
        level = commands.MemberLevel("n1", commands.SUPPORTED_LEVEL)
        self.log.apply(commands.encode(commands.Command(level, now_ms=self.clock.now_ms)))
        self._data_dir = data_dir
        self._loop = asyncio.new_event_loop()
        self._server: grpc.aio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="inprocess-store", daemon=True)
        self.endpoint = ""

    def start(self) -> None:
        self._thread.start()
        port = self._call(self._start()).result(START_TIMEOUT_S)
        self.endpoint = f"127.0.0.1:{port}"

    async def _start(self) -> int:
        spec = NodeSpec("n1", "127.0.0.1:1", "127.0.0.1:0")
        cluster = ClusterConfig(nodes=(spec,), raft_password_file=self._data_dir / "unused", tls_ca=None)
        config = NodeConfig(cluster=cluster, node=spec, data_dir=self._data_dir)
        service = SessionService(config, cast(ReplicatedLog, self.log), cast(ProposerClock, self.clock))
        service.ready = True
        self._server = grpc.aio.server()
        pb_grpc.add_SessionStoreServicer_to_server(service, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return port

    def _call(self, coroutine: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def advance(self, seconds: float) -> None:
        """Move session time forward (idle and absolute timeouts count in it)."""
        self.clock.now_ms += round(seconds * 1000)

    def session_count(self) -> int:
        return self.log.read(lambda m: len(m.sessions))

    def stop(self) -> None:
        if self._server is not None:
            self._call(self._server.stop(None)).result(START_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_S)
        self._loop.close()

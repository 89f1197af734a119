"""A sealed counter's conversion at the service: a lost race is planned again, boundedly.

The service is the node's own; the replicated log is a stand-in that applies each proposal
at once, after `interleave` (another proposer's entry that wins the race) when one is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import grpc
import pytest

from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.store import commands as c
from sessionquorum.store.clock import ProposerClock
from sessionquorum.store.config import ClusterConfig, Limits, NodeConfig, NodeSpec, limits_to_pairs
from sessionquorum.store.keyfile import KeyRing, new_keys, write_keys
from sessionquorum.store.raft import ReplicatedLog
from sessionquorum.store.replies import Code, Reply
from sessionquorum.store.sealing import Sealing
from sessionquorum.store.service import REBASE_ATTEMPTS, SessionService
from sessionquorum.store.state import SessionMachine

_T = TypeVar("_T")
NOW_MS = 1_000_000
TOKEN_HASH = hashlib.sha256(b"t").digest()


class _Log:
    """Applies each proposal at once; first runs `interleave`, if set (a race lost)."""

    def __init__(self) -> None:
        self.machine = SessionMachine(Limits())
        self._lock = threading.Lock()
        self.interleave: Callable[[], None] | None = None
        self.proposed: list[c.Command] = []
        self.replies: list[Reply] = []
        self.apply(c.Command(c.Configure(limits_to_pairs(Limits()), seed=True), now_ms=NOW_MS))
        self.apply(c.Command(c.MemberLevel("n1", c.SUPPORTED_LEVEL), now_ms=NOW_MS))

    def apply(self, cmd: c.Command) -> Reply:
        with self._lock:
            return self.machine.apply(c.encode(cmd))

    async def propose(self, entry: bytes, timeout_s: float) -> Reply:
        if self.interleave is not None:
            self.interleave()
        self.proposed.append(c.decode(entry))
        self.replies.append(self.apply(c.decode(entry)))
        return self.replies[-1]

    def read(self, fn: Callable[[SessionMachine], _T]) -> _T:
        with self._lock:
            return fn(self.machine)

    def is_leader(self) -> bool:
        return True

    def term(self) -> int:
        return 1

    member_addresses = ("127.0.0.1:1",)  # n1's Raft address in this service's config

    def member_ids(self) -> list[str]:  # the one-node cluster of this service's config
        return ["n1"]


class _Clock:
    def stamp(self, term: int) -> int:
        return NOW_MS


class _Context:
    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    async def abort(self, code: grpc.StatusCode, message: str) -> NoReturn:
        raise _Aborted(code, message)


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, message)
        self.code = code


@pytest.fixture
def setup(tmp_path: Path) -> tuple[SessionService, _Log, Sealing]:
    write_keys(tmp_path / "atrest.keys", new_keys())
    sealing = Sealing(KeyRing(tmp_path / "atrest.keys"))
    spec = NodeSpec("n1", "127.0.0.1:1", "127.0.0.1:0")
    cluster = ClusterConfig(nodes=(spec,), raft_password_file=tmp_path / "unused", tls_ca=None)
    config = NodeConfig(cluster=cluster, node=spec, data_dir=tmp_path)
    log = _Log()
    service = SessionService(config, cast(ReplicatedLog, log), cast(ProposerClock, _Clock()), sealing=sealing)
    create = pb.CreateRequest(
        token_hash=TOKEN_HASH,
        attributes=[pb.Attribute(name=b"hits", value=b"0")],
        idle_timeout_ms=3_600_000,
        absolute_timeout_ms=3_600_000,
    )
    create.request_id.client_id, create.request_id.sequence = b"creator", 1
    asyncio.run(service.Create(create, cast(Any, _Context())))
    log.proposed.clear()
    log.replies.clear()
    return service, log, sealing


def _increment(service: SessionService, cid: bytes, seq: int = 1) -> pb.UpdateResponse:
    request = pb.UpdateRequest(token_hash=TOKEN_HASH, increment=[pb.Increment(name=b"hits", delta=1)])
    request.request_id.client_id, request.request_id.sequence = cid, seq
    return asyncio.run(service.Update(request, cast(Any, _Context())))


def _race_with(log: _Log, sealing: Sealing, op: c.Update, cid: bytes) -> Callable[[], None]:
    """Another proposer's entry, planned on the state this proposer read too, applied first."""
    level = c.SUPPORTED_LEVEL
    winner = sealing.prepare(op, log.read(lambda m: sealing.plan(m, op, level)), level)

    def interleave() -> None:
        log.interleave = None
        assert log.apply(c.Command(winner, NOW_MS, cid, 1, NOW_MS)).code is Code.OK

    return interleave


def _hits(log: _Log, sealing: Sealing) -> bytes:
    stored = log.read(lambda m: sealing.resolve(m, TOKEN_HASH, c.SUPPORTED_LEVEL))
    return dict(log.read(lambda m: m.sessions[stored].pairs()))["hits"]


def test_conversion_that_loses_a_race_is_planned_again_and_the_caller_sees_one_success(
    setup: tuple[SessionService, _Log, Sealing],
) -> None:
    service, log, sealing = setup
    rival = c.Update(TOKEN_HASH, (), (), None, (("hits", 1),))
    log.interleave = _race_with(log, sealing, rival, b"rival")  # it converts first
    response = _increment(service, b"mine")
    assert [(a.name, a.value) for a in response.session.attributes] == [(b"hits", b"2")]
    mine = [cmd.op for cmd in log.proposed if cmd.client_id == b"mine"]
    assert [r.code for r in log.replies] == [Code.RETRY, Code.OK]  # the hazard happened, once
    assert isinstance(mine[0], c.Update) and mine[0].rebase == (("hits", 0),)
    assert isinstance(mine[1], c.Update) and mine[1].rebase == ()  # then a plain increment
    assert _hits(log, sealing) == b"2"


def test_conversion_losing_every_race_stops_after_its_attempts_with_nothing_applied(
    setup: tuple[SessionService, _Log, Sealing],
) -> None:
    service, log, sealing = setup
    rivals = 0

    def unrelated_change() -> None:  # keeps the counter sealed and moves the version each time
        nonlocal rivals
        rivals += 1
        other = c.Update(TOKEN_HASH, (("other", b"x"),), (), None)
        planned = sealing.prepare(other, log.read(lambda m: sealing.plan(m, other, 5)), 5)
        assert log.apply(c.Command(planned, NOW_MS, b"rival", rivals, NOW_MS)).code is Code.OK
        log.interleave = unrelated_change

    log.interleave = unrelated_change
    with pytest.raises(_Aborted) as refused:
        _increment(service, b"mine")
    assert refused.value.code is grpc.StatusCode.UNAVAILABLE  # the client retries this itself
    assert [r.code for r in log.replies] == [Code.RETRY] * REBASE_ATTEMPTS
    log.interleave = None
    assert [(a.name, a.value) for a in _increment(service, b"mine").session.attributes] == [(b"hits", b"1")]


def test_retry_of_the_same_request_after_a_conversion_is_answered_not_applied_again(
    setup: tuple[SessionService, _Log, Sealing],
) -> None:
    service, log, sealing = setup
    first = _increment(service, b"mine", seq=1)
    answered = log.read(lambda m: m.event_counts()["exactly_once_hits"])
    again = _increment(service, b"mine", seq=1)  # the client did not hear the first answer
    assert first.session.attributes == again.session.attributes
    assert log.read(lambda m: m.event_counts()["exactly_once_hits"]) == answered + 1
    assert _hits(log, sealing) == b"1"

"""The ONE workload definition every system runs: operations, mixes, values, and the targets' shape.

A target is one way of reaching one system (sessionquorum through raw gRPC stubs or through
SessionClient, etcd, Redis). Every target implements the same three session operations, so a
cell differs between systems only in what the target does per call:

| op       | sessionquorum                 | etcd                              | Redis            |
|----------|-------------------------------|-----------------------------------|------------------|
| create   | Create, 300-byte attribute    | LeaseGrant(TTL) + Put with lease  | SET k v EX t NX  |
| validate | Validate, linearizable, no touch | Range, linearizable            | GET k            |
| update   | Update, set the attribute     | Put, ignore_lease (keeps it)      | SET k v EX t XX  |
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

VALUE_BYTES = 300
# One idle timeout for every system: sessionquorum's idle_timeout, etcd's lease TTL, Redis's EX.
SESSION_TTL_S = 1800
# sessionquorum also needs an absolute lifetime (>= the idle timeout); the others have none.
SESSION_LIFETIME_S = 8 * 3600
# Per call: a worker stuck on a dead server gives up after this, so a cell ends in bounded time.
OP_TIMEOUT_S = 5.0


class Op(enum.Enum):
    CREATE = "create"
    VALIDATE = "validate"
    UPDATE = "update"


@dataclass(frozen=True, slots=True)
class Mix:
    """A workload: the share of each operation, drawn at random per call."""

    name: str
    validate: float
    create: float
    update: float

    def draw(self, rng: random.Random) -> Op:
        x = rng.random() * (self.validate + self.create + self.update)
        if x < self.validate:
            return Op.VALIDATE
        if x < self.validate + self.create:
            return Op.CREATE
        return Op.UPDATE


MIXES: dict[str, Mix] = {
    "mixed": Mix("mixed", validate=0.8, create=0.1, update=0.1),
    "read": Mix("read", validate=1.0, create=0.0, update=0.0),
    # Half new sessions, half changes to existing ones: both kinds of write a web app makes.
    "write": Mix("write", validate=0.0, create=0.5, update=0.5),
}


def new_value(rng: random.Random) -> bytes:
    return rng.randbytes(VALUE_BYTES)


class MissingSession(Exception):
    """A validate or update found no session that the warm-up created: a finding, counted as an error."""


class AsyncTarget(Protocol):
    """A system reached from asyncio tasks sharing one connection (pool) per target."""

    name: str
    server: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def create(self, value: bytes) -> bytes: ...
    async def validate(self, key: bytes) -> None: ...
    async def update(self, key: bytes, value: bytes) -> None: ...


class SyncTarget(Protocol):
    """A system reached from a pool of threads sharing one client, as a threaded web app would."""

    name: str
    server: str

    def open(self) -> None: ...
    def close(self) -> None: ...
    def create(self, value: bytes) -> bytes: ...
    def validate(self, key: bytes) -> None: ...
    def update(self, key: bytes, value: bytes) -> None: ...


Target = AsyncTarget | SyncTarget


class Server(Protocol):
    """The processes of one system, started and stopped by the harness."""

    name: str

    def start(self) -> None: ...
    def stop(self) -> dict[str, int]: ...
    def pids(self) -> dict[str, int]: ...
    def leader_view(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Cell:
    """One timed measurement: a target under one mix with this many concurrent clients."""

    target: str
    mix: str
    clients: int
    repetition: int


def cell_order(
    targets: Sequence[str], mixes: Sequence[str], clients: Sequence[int], repetitions: int
) -> list[Cell]:
    """Interleaved: every target runs a (mix, clients) cell before the next one starts.

    Drift on a shared machine (a neighbour's build, thermal throttling) then hits every system
    alike instead of whichever ran last. The targets' order rotates with each repetition so
    that none always runs right after the same other one.
    """
    order: list[Cell] = []
    for rep in range(repetitions):
        shift = rep % len(targets)
        rotated = [*targets[shift:], *targets[:shift]]
        for mix in mixes:
            for n in clients:
                order.extend(Cell(t, mix, n, rep) for t in rotated)
    return order

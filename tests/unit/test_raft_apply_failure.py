"""Apply failures stop the node loudly instead of wedging it (store/raft.py)."""

from __future__ import annotations

import threading

import pytest

from sessionquorum.store import raft
from sessionquorum.store.commands import Barrier, Command, encode
from sessionquorum.store.config import Limits
from sessionquorum.store.state import SessionMachine


class Exited(Exception):
    pass


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited

    monkeypatch.setattr(raft.os, "_exit", fake_exit)
    return codes


def consumer(machine: SessionMachine, applied: list[int] | None = None) -> raft._Replicated:
    return raft._Replicated(machine, threading.Lock(), (applied if applied is not None else []).append)


def test_an_apply_that_raises_stops_the_node_with_exit_70(
    exits: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    machine = SessionMachine(Limits())

    def broken(entry: bytes) -> None:
        raise KeyError("a bug in apply")

    monkeypatch.setattr(machine, "apply_entry", broken)
    with pytest.raises(Exited):
        consumer(machine).apply(encode(Command(Barrier(), now_ms=1)), _doApply=True)
    assert exits == [raft.EXIT_UNDECODABLE]


def test_an_undecodable_entry_stops_the_node_with_exit_70(exits: list[int]) -> None:
    with pytest.raises(Exited):
        consumer(SessionMachine(Limits())).apply(b"\xc1 not msgpack", _doApply=True)
    assert exits == [raft.EXIT_UNDECODABLE]


def test_a_good_entry_is_applied_and_its_time_observed(exits: list[int]) -> None:
    applied: list[int] = []
    reply = consumer(SessionMachine(Limits()), applied).apply(
        encode(Command(Barrier(), now_ms=42)), _doApply=True
    )
    assert reply.ok and applied == [42] and exits == []

"""Proposed entries are pickled with protocol 4, and read back as pysyncobj's own (store/raft.py)."""

from __future__ import annotations

import os
import pickle
import threading
from typing import Any

from pysyncobj import pickle as pysyncobj_pickle

from sessionquorum.store import raft
from sessionquorum.store.config import Limits
from sessionquorum.store.state import SessionMachine


class FakeSyncObj:
    """What pysyncobj's `@replicated` and `_Replicated.propose` use of SyncObj."""

    def __init__(self) -> None:
        self._methodToID: dict[Any, int] = {}
        self.applied: list[tuple[bytes, Any, int]] = []

    def _getFuncName(self, key: Any) -> Any:
        return key

    def _applyCommand(self, command: bytes, callback: Any, command_type: int) -> None:
        self.applied.append((command, callback, command_type))


def _consumer() -> tuple[raft._Replicated, FakeSyncObj]:
    consumer = raft._Replicated(SessionMachine(Limits()), threading.Lock(), lambda _: None)
    sync = FakeSyncObj()
    sync._methodToID[(id(consumer), (id(consumer), "apply"))] = 7
    consumer._syncObj = sync
    return consumer, sync


def test_a_proposed_entry_unpickles_as_the_decorators_did_and_is_a_third_smaller() -> None:
    entry = os.urandom(20_000)  # sealed values: bytes above 0x7f double in protocol 2's latin-1
    consumer, sync = _consumer()
    consumer.apply(entry, callback=print)  # pysyncobj's own path: protocol 2
    consumer.propose(entry, print)
    (old, old_cb, old_type), (new, new_cb, new_type) = sync.applied
    # Nodes of either release unpickle both with pysyncobj's loads: same method id and bytes.
    assert pysyncobj_pickle.loads(old) == pysyncobj_pickle.loads(new) == (7, (entry,))
    assert pickle.loads(new) == (7, (entry,)) and (new_cb, new_type) == (old_cb, old_type)
    assert new[1] == raft.ENTRY_PICKLE_PROTOCOL  # PROTO opcode's argument
    assert len(new) < len(entry) + 64 < len(old) * 3 // 4  # protocol 2 measured +50 %

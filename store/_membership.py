"""Fixes to pysyncobj 0.3.17's dynamic membership change, for when it is switched on.

sessionquorum runs with `dynamicMembershipChange=False` (store/DESIGN.md, "Membership":
what else a live change needs). These fix two defects of pysyncobj's own mechanism, so that
the Raft layer is sound once it is used; `raft.py` wires them into `_GuardedSyncObj`, and
tests/unit/test_pysyncobj_membership.py shows each defect on plain pysyncobj (canaries).

1. One change at a time (Raft thesis 4.1): pysyncobj's guard never fires (its
   `__changeClusterIDx` is never set), so a second change could be appended before the
   first committed, and two configurations two servers apart could each elect a leader.
   `ChangeGate` refuses a change while the last one this leader appended is uncommitted.
2. A snapshot's members: pysyncobj stores its members at the log's END (changes take
   effect when appended), which may include changes after the snapshot's last entry that
   are later truncated. `members_at` undoes the changes after that entry.
3. (In raft.py, `apply_tail_changes`.) After a restart pysyncobj takes a change into
   account only once applied, not from the log's tail as at append.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

ADD, REMOVE = "add", "rem"


class ChangeGate:
    """The leader side of "one change at a time": remember where the last change went."""

    def __init__(self) -> None:
        self._pending_index: int | None = None
        self.refused = 0  # changes refused because one was still uncommitted

    def may_change(self, commit_index: int) -> bool:
        if self._pending_index is not None and commit_index >= self._pending_index:
            self._pending_index = None
        if self._pending_index is None:
            return True
        self.refused += 1
        return False

    def appended(self, index: int) -> None:
        self._pending_index = index


def members_at(current: Iterable[Any], later_changes: Sequence[Sequence[Any]]) -> set[Any]:
    """The members before `later_changes` (pysyncobj requests `[kind, node id, node]`, in
    log order) took effect, given the members after them."""
    members = set(current)
    for change in reversed(later_changes):
        kind, node = change[0], change[2] if len(change) >= 3 else change[1]
        if kind == ADD:
            members.discard(node)
        elif kind == REMOVE:
            members.add(node)
    return members

"""Network partitions as values: who cannot talk to whom, and the iptables rules that say so.

Pure (no processes, no kernel): _netns.py applies what this module computes. A partition is
a set of cut links, each an unordered pair of nodes; links are symmetric because pysyncobj
keeps one TCP connection per node pair, so cutting one direction would still let a
connection half-work (shared/reference/raft-pitfalls.md, "Transport and security").

The shapes follow Jepsen's nemeses:

- `split(groups)`: nodes in different groups cannot talk (`isolate` is one node vs the rest);
- `bridge`: two halves that cannot talk, and one node in the middle that sees both;
- `ring` ("majorities ring"): every node sees a majority (itself included), and no two nodes
  see the same majority, so several nodes can each believe they are in the majority.

A node's rules drop both what comes in from and what goes out to each peer it is cut from,
by the peer's IP: clients (the bridge address) are never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Partition:
    """Which links between `nodes` are cut; `name` says which shape made it."""

    name: str
    nodes: tuple[str, ...]
    cut: frozenset[frozenset[str]]

    def can_talk(self, a: str, b: str) -> bool:
        return frozenset((a, b)) not in self.cut

    def blocked(self, node: str) -> tuple[str, ...]:
        """The peers `node` cannot reach, in node order."""
        _check_known(self.nodes, [node])
        return tuple(p for p in self.nodes if p != node and not self.can_talk(node, p))

    def sees(self, node: str) -> tuple[str, ...]:
        """The nodes `node` can reach, itself included, in node order."""
        _check_known(self.nodes, [node])
        return tuple(p for p in self.nodes if p == node or self.can_talk(node, p))

    @property
    def healed(self) -> bool:
        return not self.cut

    def components(self) -> tuple[tuple[str, ...], ...] | None:
        """The groups, if "can talk" is transitive (a clean split); None for bridge or ring."""
        groups: list[tuple[str, ...]] = []
        for node in self.nodes:
            group = self.sees(node)
            if any(node in g for g in groups):
                continue
            if any(self.sees(member) != group for member in group):
                return None
            groups.append(group)
        return tuple(groups)

    def __str__(self) -> str:
        if self.healed:
            return "healed"
        groups = self.components()
        if groups is not None:
            return f"{self.name}: " + " | ".join(" ".join(g) for g in groups)
        return f"{self.name}: " + "; ".join(f"{n} sees {' '.join(self.sees(n))}" for n in self.nodes)


def _check_known(nodes: Sequence[str], named: Iterable[str]) -> None:
    unknown = [n for n in named if n not in nodes]
    if unknown:
        raise ValueError(f"unknown node(s) {', '.join(unknown)} (known: {', '.join(nodes)})")


def _pairs(groups: Sequence[Sequence[str]]) -> frozenset[frozenset[str]]:
    """Every pair of nodes that sit in different groups."""
    return frozenset(
        frozenset((a, b))
        for i, first in enumerate(groups)
        for second in groups[i + 1 :]
        for a in first
        for b in second
    )


def healed(nodes: Sequence[str]) -> Partition:
    return Partition("healed", tuple(nodes), frozenset())


def split(nodes: Sequence[str], groups: Sequence[Sequence[str]], name: str = "split") -> Partition:
    """Nodes in different groups cannot talk; the groups must cover every node exactly once."""
    named = [n for g in groups for n in g]
    _check_known(nodes, named)
    duplicated = sorted({n for n in named if named.count(n) > 1})
    if duplicated:
        raise ValueError(f"node(s) {', '.join(duplicated)} in more than one group")
    missing = [n for n in nodes if n not in named]
    if missing:
        raise ValueError(f"node(s) {', '.join(missing)} in no group: every node needs a side")
    if any(not g for g in groups):
        raise ValueError("empty group")
    return Partition(name, tuple(nodes), _pairs(groups))


def isolate(nodes: Sequence[str], node: str) -> Partition:
    """`node` alone on one side, everyone else together on the other."""
    _check_known(nodes, [node])
    return split(nodes, [[node], [n for n in nodes if n != node]], name=f"isolate {node}")


def bridge(nodes: Sequence[str]) -> Partition:
    """Two halves that cannot talk, both seeing one node in the middle (5 nodes: 2 | 1 | 2).

    As Jepsen's bridge: the second half's first node is the bridge, so with 5 nodes n1 n2
    and n4 n5 are cut from each other and n3 sees everyone.
    """
    if len(nodes) < 3:
        raise ValueError(f"a bridge needs at least 3 nodes, got {len(nodes)}")
    half = len(nodes) // 2
    left, middle, right = nodes[:half], nodes[half], nodes[half + 1 :]
    return Partition(f"bridge via {middle}", tuple(nodes), _pairs([left, right]))


def ring(nodes: Sequence[str], order: Sequence[str] | None = None) -> Partition:
    """Majorities ring: each node sees itself and its nearest neighbours on a ring, a majority.

    With n nodes a node must see n // 2 others; links are symmetric, so that takes n // 2
    to be even (half on each side): 4, 5, 8, 9... nodes. `order` lays out the ring
    (default: node order); pass a shuffled one to vary which majorities overlap.
    """
    ring_order = tuple(order) if order is not None else tuple(nodes)
    if sorted(ring_order) != sorted(nodes):
        raise ValueError(f"ring order {list(ring_order)} must list every node once ({', '.join(nodes)})")
    n = len(nodes)
    each_side, odd = divmod(n // 2, 2)
    if n < 4 or odd:
        raise ValueError(
            f"a majorities ring with symmetric links needs n // 2 even and n >= 4 (4, 5, 8, 9... nodes), "
            f"got {n}"
        )
    sees = {
        node: {ring_order[(i + d) % n] for d in range(-each_side, each_side + 1)}
        for i, node in enumerate(ring_order)
    }
    cut = frozenset(
        frozenset((a, b)) for i, a in enumerate(nodes) for b in nodes[i + 1 :] if b not in sees[a]
    )
    return Partition("ring", tuple(nodes), cut)


def iptables_rules(partition: Partition, node: str, addresses: Mapping[str, str]) -> str:
    """iptables-restore input for `node`'s own namespace: its whole filter table.

    Replacing the table (not appending) makes applying a partition idempotent and makes
    "heal" just another partition; the namespace holds no rules but ours.
    """
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for peer in partition.blocked(node):
        ip = addresses[peer]
        lines.append(f"-A INPUT -s {ip}/32 -j DROP")
        lines.append(f"-A OUTPUT -d {ip}/32 -j DROP")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"

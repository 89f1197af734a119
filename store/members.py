"""Who the members are, by name: node identities from the log over cluster.json.

pysyncobj knows a member by its Raft address only. The first members are named by the
cluster's file; a node added live is named by the `MemberIdentity` command its MemberAdd
wrote to the log before the Raft change (level 5), so every node, a restarted one and a
new one included, learns its id and gRPC address from the log or a snapshot, not from a
file it may not have. A log identity wins over the file for the same Raft address.

Used for: MemberList, the leader hint (`sq-leader`) clients follow, log lines, the lease
gate and the command-level gate (`levels_counted`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .config import NodeConfig


@dataclass(frozen=True, slots=True)
class Name:
    node_id: str
    grpc_address: str


def directory(config: NodeConfig, nodes: Mapping[str, tuple[str, str]]) -> dict[str, Name]:
    """Raft address -> name: cluster.json's nodes, overridden by the log's identities."""
    names = {n.raft_address: Name(n.id, n.grpc_address) for n in config.cluster.nodes}
    for node_id, (raft, grpc) in sorted(nodes.items()):
        names[raft] = Name(node_id, grpc)
    return names


def member_ids(names: Mapping[str, Name], raft_addresses: Iterable[str]) -> list[str]:
    """The ids of these Raft members; an unnamed member is named by its address."""
    return sorted(names[a].node_id if a in names else a for a in raft_addresses)


def levels_counted(
    config: NodeConfig, ids: Iterable[str], advertised: Mapping[str, int], added: Mapping[str, object]
) -> list[str]:
    """The members the leader's command level is the lowest of.

    An original member (in the cluster's file, with no identity in the log) that never
    advertised counts as level 1 (an older release, as before live membership). A member
    added live (`added`: its identity is in the log) counts once it advertised, at its
    first start: until then it is left out, so writes keep the cluster's level while it
    joins; a joining node older than that level stops at the first entry it cannot apply
    (exit 70, never a divergence). Not the file alone: a node restarted after an add has
    the new node in its file too (measured: a restarted leader refused level-5 commands).
    """
    original = {n.id for n in config.cluster.nodes} - set(added)
    return [i for i in ids if i in original or i in advertised]


class MemberIds:
    """`member_ids(directory(config, nodes), raft_addresses)`, worked out again only when the
    membership or the log's identities changed.

    The service asks it on every write (the command-level gate, under the state lock it
    holds anyway); membership changes are rare, and the key is two small tuples. Used from
    one thread (the event loop's).
    """

    def __init__(self, config: NodeConfig) -> None:
        self._config = config
        self._key: tuple[tuple[str, ...], tuple[tuple[str, tuple[str, str]], ...]] | None = None
        self._ids: tuple[str, ...] = ()

    def of(self, nodes: Mapping[str, tuple[str, str]], raft_addresses: tuple[str, ...]) -> tuple[str, ...]:
        key = (raft_addresses, tuple(nodes.items()))
        if key != self._key:
            self._ids = tuple(member_ids(directory(self._config, nodes), raft_addresses))
            self._key = key
        return self._ids

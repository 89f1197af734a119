"""Nemeses: faults a chaos run injects and heals, each a small object with two methods.

`inject` breaks something and says what; `heal` undoes it. `recovery_from` says which
instant the recovery time is measured from: the kill of a leader (clients must find the
new one) or the heal (a majority reconnecting).
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import grpc

from sessionquorum.cluster import ClusterError, LocalCluster
from sessionquorum.cluster._grow import member_ids, send_change, settled_members, wait_all_connected
from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

from ._netns import NetnsNetwork

RecoveryFrom = Literal["inject", "heal"]
TRANSFER_RPC_TIMEOUT_S = 10.0


def _leader(cluster: LocalCluster) -> str:
    return cluster.leader_id() or cluster.wait_for_leader(30.0)


def _followers(cluster: LocalCluster) -> list[str]:
    leader = _leader(cluster)
    return [n for n in cluster.node_ids if n != leader]


class Nemesis(ABC):
    name: str
    recovery_from: RecoveryFrom = "heal"

    @abstractmethod
    def inject(self, cluster: LocalCluster, rng: random.Random) -> str: ...

    @abstractmethod
    def heal(self, cluster: LocalCluster) -> None: ...


class Kill(Nemesis):
    """kill -9 of the leader, a follower, a minority (leader included) or every node."""

    def __init__(self, target: Literal["leader", "follower", "minority", "all"]) -> None:
        self.target = target
        self.name = f"kill-{target}"
        self.recovery_from = "inject" if target in ("leader", "minority") else "heal"
        self._victims: list[str] = []

    def inject(self, cluster: LocalCluster, rng: random.Random) -> str:
        if self.target == "leader":
            victims = [_leader(cluster)]
        elif self.target == "follower":
            victims = [rng.choice(_followers(cluster))]
        elif self.target == "minority":
            others = _followers(cluster)
            rng.shuffle(others)
            victims = [_leader(cluster), *others[: (len(cluster.node_ids) - 1) // 2 - 1]]
        else:
            victims = list(cluster.node_ids)
        for node in victims:
            cluster.kill(node)
        self._victims = victims
        return "killed " + ",".join(victims)

    def heal(self, cluster: LocalCluster) -> None:
        for node in self._victims:
            cluster.restart(node)
        self._victims = []


class Pause(Nemesis):
    """SIGSTOP of the leader or of a follower; SIGCONT to heal."""

    def __init__(self, target: Literal["leader", "follower"]) -> None:
        self.target = target
        self.name = f"pause-{target}"
        # A paused leader is, to the others, a dead one: they must elect and serve at once.
        self.recovery_from = "inject" if target == "leader" else "heal"
        self._victim: str | None = None

    def inject(self, cluster: LocalCluster, rng: random.Random) -> str:
        victim = _leader(cluster) if self.target == "leader" else rng.choice(_followers(cluster))
        cluster.pause(victim)
        self._victim = victim
        return f"paused {victim}"

    def heal(self, cluster: LocalCluster) -> None:
        if self._victim is not None:
            cluster.resume(self._victim)
            self._victim = None


class Partitioner(Nemesis):
    """Cut links between nodes (iptables in their own network namespaces).

    isolate-leader: the leader alone; split: a random majority/minority split; bridge: two
    halves that both see one middle node (5 nodes); ring: every node sees a majority, no two
    the same one (5 nodes). Clients always reach every node: only node-to-node links are cut.
    """

    recovery_from: RecoveryFrom = "inject"

    def __init__(self, kind: Literal["isolate-leader", "split", "bridge", "ring"], net: NetnsNetwork) -> None:
        self.kind = kind
        self.name = f"partition-{kind}"
        self._net = net

    def inject(self, cluster: LocalCluster, rng: random.Random) -> str:
        net = self._net
        if self.kind == "isolate-leader":
            partition = net.isolate(_leader(cluster))
        elif self.kind == "split":
            nodes = list(cluster.node_ids)
            rng.shuffle(nodes)
            cut = len(nodes) // 2
            partition = net.split([nodes[:cut], nodes[cut:]])
        elif self.kind == "bridge":
            partition = net.bridge_partition()
        else:
            order = list(cluster.node_ids)
            rng.shuffle(order)
            partition = net.ring(order)
        return str(partition)

    def heal(self, cluster: LocalCluster) -> None:
        self._net.heal()


LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


class ClockWrapper:
    """A node wrapper that starts chosen nodes under libfaketime (offset and rate)."""

    def __init__(self) -> None:
        self.skews: dict[str, str] = {}

    def __call__(self, node_id: str, argv: list[str]) -> Sequence[str]:
        spec = self.skews.get(node_id)
        if spec is None:
            return argv
        # `env` execs the node (faketime(1) would fork): the pid stays the node's own.
        return ["env", f"LD_PRELOAD={LIBFAKETIME}", f"FAKETIME={spec}", "FAKETIME_NO_CACHE=1", *argv]


class ClockSkew(Nemesis):
    """Restart one node with its clock offset (up to a minute either way) and running at a
    different rate (0.5x to 2x, which also scales its election and heartbeat timers)."""

    name = "clock-skew"
    recovery_from: RecoveryFrom = "heal"

    def __init__(self, wrapper: ClockWrapper) -> None:
        self._wrapper = wrapper
        self._victim: str | None = None

    def inject(self, cluster: LocalCluster, rng: random.Random) -> str:
        victim = rng.choice(list(cluster.node_ids))
        spec = f"{rng.randint(-60, 60):+d}s x{rng.choice(['0.5', '0.8', '1.25', '2'])}"
        self._wrapper.skews[victim] = spec
        cluster.restart(victim)
        self._victim = victim
        return f"{victim} at {spec}"

    def heal(self, cluster: LocalCluster) -> None:
        if self._victim is not None:
            self._wrapper.skews.pop(self._victim, None)
            cluster.restart(self._victim)
            self._victim = None


class Transfer(Nemesis):
    """A planned leadership transfer (`LeaderTransfer` on the leader): not a fault, but the
    moment a lease is handed over, checked like one. `heal` has nothing to undo."""

    name = "leader-transfer"
    recovery_from: RecoveryFrom = "inject"

    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def inject(self, cluster: LocalCluster, rng: random.Random) -> str:
        old = _leader(cluster)
        others = [n for n in cluster.node_ids if n != old]
        target = rng.choice([*others, ""])  # "": the leader picks the most caught-up follower
        channel = cluster.channel(old)
        try:
            reply = pb_grpc.SessionStoreStub(channel).LeaderTransfer(
                pb.LeaderTransferRequest(to_node_id=target), timeout=TRANSFER_RPC_TIMEOUT_S
            )
            detail = (
                f"{old} -> {reply.leader_node_id or '?'} (asked {target or 'any'}) in {reply.seconds:.3f} s"
            )
        except grpc.RpcError as exc:
            detail = f"{old} -> {target or 'any'} refused: {exc.code().name}: {exc.details()}"
        finally:
            channel.close()
        self.outcomes.append(detail)
        return detail

    def heal(self, cluster: LocalCluster) -> None:
        pass


class Membership(Nemesis):
    """Live membership under load (`MemberAdd` / `MemberRemove`): each injection grows the
    cluster by one new node up to two above its first size, then shrinks it by one back to
    that size, and so on (3 -> 4 -> 5 -> 4 -> 3 -> ...). A shrink removes any member, an
    original one too (a replaced machine), and every other shrink the leader itself, which
    hands over first. `heal` has nothing to undo: every change is complete when it returns."""

    name = "membership"
    recovery_from: RecoveryFrom = "inject"

    def __init__(self, extra: int = 2) -> None:
        self._extra = extra
        self._base: int | None = None
        self._growing = True
        self._shrinks = 0
        self.outcomes: list[str] = []

    def inject(self, cluster: LocalCluster, rng: random.Random) -> str:
        size = len(cluster.node_ids)
        if self._base is None:
            self._base = size
        if self._growing and size >= self._base + self._extra:
            self._growing = False
        elif not self._growing and size <= self._base:
            self._growing = True
        started = time.monotonic()
        reconciled = len(cluster.reconciled)
        try:
            if self._growing:
                node, _ = cluster.grow()
                detail = f"added {node}"
            else:
                leader = _leader(cluster)
                others = [n for n in cluster.node_ids if n != leader]
                victim = leader if self._shrinks % 2 == 1 else rng.choice(others)
                self._shrinks += 1
                cluster.shrink(victim)
                detail = f"removed {victim}" + (" (the leader)" if victim == leader else "")
        except ClusterError as exc:
            # Refused, and the settled MemberList agrees that nothing changed (grow / shrink
            # ask it): the file and the processes are as before.
            detail = f"change refused: {str(exc).splitlines()[0]}"
        # A reply lost or failed although the change happened: what the members say counts.
        detail += "".join(
            f" (outcome unknown, reconciled: {note})" for note in cluster.reconciled[reconciled:]
        )
        detail += f" in {time.monotonic() - started:.3f} s: {len(cluster.node_ids)} members"
        self.outcomes.append(detail)
        return detail

    def heal(self, cluster: LocalCluster) -> None:
        pass


class KillDuringChange(Nemesis):
    """kill -9 of the leader while it adds a node: the MemberAdd is in flight (sent 0-100 ms
    before the kill), so the change may be lost, appended only, or committed. `heal`
    restarts the old leader, completes the add (MemberAdd again: a member already is
    answered at once) and removes the node again, so every cycle is 3 -> 4 -> 3."""

    name = "membership-kill-leader"
    recovery_from: RecoveryFrom = "inject"

    def __init__(self) -> None:
        self._victim: str | None = None
        self._added: str | None = None
        self.outcomes: list[str] = []

    def inject(self, cluster: LocalCluster, rng: random.Random) -> str:
        leader = _leader(cluster)
        try:
            node = cluster.add_node()
        except ClusterError as exc:  # it did not come up: taken back, and no kill this time
            detail = f"change refused: no new node: {str(exc).splitlines()[0]}"
            self.outcomes.append(detail)
            return detail
        self._added, self._victim = node, leader
        channel = cluster.channel(leader)
        try:
            call = pb_grpc.SessionStoreStub(channel).MemberAdd.future(
                cluster.member_add_request(node), timeout=TRANSFER_RPC_TIMEOUT_S
            )
            threading.Event().wait(rng.uniform(0.0, 0.1))  # a jitter, to hit each step of the change
            cluster.kill(leader)
            try:
                call.result()
                outcome = "acknowledged"
            except grpc.RpcError as exc:
                outcome = f"{exc.code().name}"
        finally:
            channel.close()
        detail = f"adding {node}, killed leader {leader}: {outcome}"
        self.outcomes.append(detail)
        return detail

    def heal(self, cluster: LocalCluster) -> None:
        if self._victim is not None:
            cluster.start_node(self._victim)
            self._victim = None
        wait_all_connected(cluster)  # else the add could not commit (the quorum check says so)
        if self._added is not None:
            node, self._added = self._added, None
            try:
                send_change(cluster, cluster.member_add_request(node))
            except ClusterError as exc:
                # Not added after all: shrink below finds it no member and takes it back.
                self.outcomes.append(f"completing the add of {node} failed: {str(exc).splitlines()[0]}")
            cluster.shrink(node)
            # However the kill fell, the Raft membership is the file's again.
            members = member_ids(settled_members(cluster))
            if members != sorted(cluster.node_ids):
                raise ClusterError(f"members {members} after the heal, expected {sorted(cluster.node_ids)}")


def process_nemesis(name: str) -> Nemesis:
    """The process-level nemeses by name (no root needed)."""
    table: dict[str, Nemesis] = {
        "kill-leader": Kill("leader"),
        "kill-follower": Kill("follower"),
        "kill-minority": Kill("minority"),
        "kill-all": Kill("all"),
        "pause-leader": Pause("leader"),
        "pause-follower": Pause("follower"),
        "leader-transfer": Transfer(),
        "membership": Membership(),
        "membership-kill-leader": KillDuringChange(),
    }
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown nemesis {name!r}; known: {', '.join(sorted(table))}") from None


PARTITIONS = ("partition-isolate-leader", "partition-split", "partition-bridge", "partition-ring")

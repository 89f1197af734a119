"""Live membership for a cluster directory: a new node's entry and certificate, the RPCs.

`member add` on a local cluster: a free Raft, gRPC and metrics port on 127.0.0.1, a node
certificate issued from the CA key the directory kept (like `init` does for the first
nodes), the node's entry appended to cluster.json (so the launcher can start it and a
restarted member knows how to reach it) and its data dir; then the node is started and
`MemberAdd` sent to the leader. The members learn who it is from the log (its identity is
a replicated command), not from this file. `member remove` sends `MemberRemove` (to the
new leader if the leader itself goes: it hands over first), then stops the node and drops
its entry, certificate and data dir (a removed member's log is of no use to anyone).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import grpc

from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc
from sessionquorum.store.config import split_address
from sessionquorum.store.errors import ConfigError

from . import _tls
from ._bootstrap import CONFIG_NAME, HOST, _join, _mkdir_private, _write_json_atomically, free_ports
from ._certs import _ca
from ._errors import ClusterError, ClusterUnavailable
from ._view import ClusterView

# A change is refused while another is uncommitted, or hands leadership over first: the
# request goes again (to the leader of the moment) at most this often, this far apart.
CHANGE_TRIES = 20
RETRY_PAUSE_S = 0.25
RPC_MARGIN_S = 5.0
# How long a tool waits for the membership to settle after a change whose outcome it does
# not know (an error after the request was sent), before it gives up deciding.
SETTLE_TIMEOUT_S = 60.0
_NODE_NUMBER = re.compile(r"n(\d+)")
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # what MemberAdd accepts


def _raw(data_dir: Path) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((data_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    return raw


def next_node_id(data_dir: Path) -> str:
    """n<N+1>, N the highest number of a node in the file or a data dir left by one."""
    numbers = [int(m.group(1)) for n in _raw(data_dir)["nodes"] if (m := _NODE_NUMBER.fullmatch(n["id"]))]
    numbers += [int(m.group(1)) for p in data_dir.iterdir() if (m := _NODE_NUMBER.fullmatch(p.name))]
    return f"n{max(numbers, default=0) + 1}"


def add_node_entry(
    data_dir: Path, node_id: str | None = None, raft: str | None = None, grpc_address: str | None = None
) -> str:
    """Append a new node to the directory's cluster.json, with its certificate.

    Without addresses: a local node on free 127.0.0.1 ports. With them (another machine):
    its certificate names their hosts, like `init --hosts` does for the first nodes.
    """
    raw = _raw(data_dir)
    node_id = node_id or next_node_id(data_dir)
    if not _NODE_ID.fullmatch(node_id):
        raise ClusterError(f"node id {node_id[:64]!r} must match {_NODE_ID.pattern}")
    if any(n["id"] == node_id for n in raw["nodes"]):
        raise ClusterError(f"{node_id} is in {CONFIG_NAME} already")
    raft_port, grpc_port, metrics_port = free_ports(3)
    raft = raft or _join(HOST, raft_port)
    grpc_address = grpc_address or _join(HOST, grpc_port)
    taken = {a for n in raw["nodes"] for a in (n["raft"], n["grpc"])}
    hosts: list[str] = []
    for address in (raft, grpc_address):
        if address in taken:
            raise ClusterError(f"{address} is another node's address already")
        try:
            host, _ = split_address(address)
        except ConfigError as exc:
            raise ClusterError(str(exc)) from None
        hosts += [host] if host not in hosts else []
    local = all(h == HOST for h in hosts)
    ca = _ca(data_dir, data_dir / raw["tls_ca"])
    names = (HOST, "localhost") if local else tuple(hosts)
    leaf = _tls.issue_leaf(ca, node_id, names, server=True)
    cert, key = f"tls/{node_id}.pem", f"tls/{node_id}.key"
    _tls.write_issued(leaf, data_dir / cert, data_dir / key)
    entry = {"id": node_id, "raft": raft, "grpc": grpc_address, "tls_cert": cert, "tls_key": key}
    if local and any("metrics" in n for n in raw["nodes"]):
        entry["metrics"] = _join(HOST, metrics_port)
    _mkdir_private(data_dir / node_id)
    raw["nodes"].append(entry)
    _write_json_atomically(data_dir / CONFIG_NAME, raw)
    return node_id


def drop_node_entry(data_dir: Path, node_id: str) -> None:
    """Remove a removed member's entry, certificate and data dir (it must not be running)."""
    raw = _raw(data_dir)
    kept = [n for n in raw["nodes"] if n["id"] != node_id]
    if len(kept) == len(raw["nodes"]):
        raise ClusterError(f"{node_id} is not in {CONFIG_NAME}")
    raw["nodes"] = kept
    _write_json_atomically(data_dir / CONFIG_NAME, raw)
    for name in (f"tls/{node_id}.pem", f"tls/{node_id}.key"):
        (data_dir / name).unlink(missing_ok=True)
    shutil.rmtree(data_dir / node_id, ignore_errors=True)


def _member_list(view: ClusterView, timeout_s: float) -> Any:
    channel = view.channel(_leader_of(view, timeout_s))
    try:
        request = pb.MemberListRequest(leader_only=True)
        return pb_grpc.SessionStoreStub(channel).MemberList(request, timeout=10)
    except grpc.RpcError as exc:
        raise ClusterUnavailable(f"{exc.code().name}: {exc.details()}") from None
    finally:
        channel.close()


def leader_members(view: ClusterView, timeout_s: float = 30.0) -> list[str]:
    """The member ids in the leader's view (MemberList): appended changes count there."""
    return sorted(m.node_id for m in _member_list(view, timeout_s).members)


def settled_members(view: ClusterView, timeout_s: float | None = None) -> Any:
    """The leader's MemberList once it is committed: the replicated truth about who is a member.

    pysyncobj counts a change from the moment it is appended, so a leader's MemberList may
    name a change that a new leader then drops. Settled: a second answer from the same
    leader, in the same term, with the same members, whose commit index reached the first
    answer's last log index (the leader's own match index): every change that leader had
    appended then is committed. ClusterUnavailable when no leader holds still that long.
    """
    timeout_s = SETTLE_TIMEOUT_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    first: Any = None
    while (left := deadline - time.monotonic()) > 0:
        try:
            reply = _member_list(view, left)
        except ClusterError:  # no leader now, or it changed meanwhile: start again
            first = None
        else:
            same = first is not None and _key(reply) == _key(first)
            if same and reply.commit_index >= _own_index(first):
                return reply
            if not same:
                first = reply
        time.sleep(RETRY_PAUSE_S)
    raise ClusterUnavailable(f"the membership did not settle within {timeout_s:g} s (no stable leader)")


def _key(reply: Any) -> tuple[str, int, list[str]]:
    return reply.answered_by, reply.term, member_ids(reply)


def _own_index(reply: Any) -> int:
    return max((m.match_index for m in reply.members if m.is_self), default=0)


def member_ids(reply: Any) -> list[str]:
    return sorted(m.node_id for m in reply.members)


def outcome(view: ClusterView, error: ClusterError) -> Any:
    """After a change failed with `error`, possibly once sent (a lost reply, a deadline, a
    leader change: it may have happened all the same): the settled MemberList that decides.
    ClusterUnavailable, naming `error`, when the cluster cannot say."""
    try:
        return settled_members(view)
    except ClusterUnavailable as exc:
        raise ClusterUnavailable(f"{error}; whether the change happened is unknown: {exc}") from error


def wait_all_connected(view: ClusterView, timeout_s: float = 30.0) -> None:
    """Until the leader has a live link to every member (a restarted one reconnected)."""

    def connected() -> bool:
        try:
            return all(m.connected for m in _member_list(view, timeout_s).members)
        except ClusterUnavailable:
            return False  # the leader changed meanwhile: ask again

    view.wait_until(connected, timeout_s, "the leader to reach every member")


def _leader_of(view: ClusterView, timeout_s: float) -> str:
    """The agreed leader, or else the node that says it leads in the highest term.

    The agreement counts cluster.json's nodes, and during a change the file holds a node
    that is not a member yet (or no longer): it must not stop the change. Asking a node
    that wrongly believes it leads is harmless: Raft and the quorum check refuse there.
    """

    def found() -> str | None:
        agreed = view.leader_id()
        if agreed is not None:
            return agreed
        claims = [
            (s.term, n) for n, s in view.statuses().items() if s is not None and s.is_leader and s.ready
        ]
        return max(claims)[1] if claims else None

    return view.wait_until(found, timeout_s, "a leader")


def send_change(view: ClusterView, request: pb.MemberAddRequest | pb.MemberRemoveRequest) -> Any:
    """Send a membership change to the leader of the moment; retried (bounded) while the
    cluster answers "not now" (another change uncommitted, or leadership just handed over)."""
    timeout_s = (request.timeout_s or 30.0) + RPC_MARGIN_S
    last = ""
    for _ in range(CHANGE_TRIES):
        leader = _leader_of(view, 30.0)
        channel = view.channel(leader)
        try:
            stub = pb_grpc.SessionStoreStub(channel)
            if isinstance(request, pb.MemberAddRequest):
                return stub.MemberAdd(request, timeout=timeout_s)
            return stub.MemberRemove(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            code, last = exc.code(), f"{exc.code().name}: {exc.details()}"
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
                raise ClusterError(f"refused: {exc.details()}") from None
            if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION):
                raise ClusterUnavailable(last) from None
            if "command level" in (exc.details() or ""):
                raise ClusterError(f"refused: {exc.details()}") from None
            if "member(s) are connected" in (exc.details() or ""):
                raise ClusterUnavailable(f"refused: {exc.details()}") from None  # for the operator
        finally:
            channel.close()
        time.sleep(RETRY_PAUSE_S)  # the next leader, or the previous change's commit
    raise ClusterUnavailable(f"the membership change did not go through: {last}")

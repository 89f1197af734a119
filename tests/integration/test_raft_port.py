"""The Raft port refuses what an unauthenticated peer can send before authentication."""

from __future__ import annotations

import contextlib
import socket
import struct
from pathlib import Path

import pytest

from .conftest import ClusterFactory

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("length", [2**31 - 1, -5])
def test_raft_port_drops_a_connection_announcing_an_out_of_bounds_message(
    make_cluster: ClusterFactory, length: int
) -> None:
    cluster = make_cluster(3)
    node = cluster.node_ids[0]
    host, port = cluster.config.node(node).raft_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10.0) as sock:
        sock.sendall(struct.pack("i", length) + b"x" * 4096)
        try:
            closed = sock.recv(1024) == b""
        except ConnectionResetError:
            closed = True
    assert closed, "the node kept a connection that announced a 2 GiB message"
    assert cluster.status(node) is not None
    assert cluster.wait_for_leader(10.0)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _closed_by_node(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, TimeoutError):
        return True


def test_strangers_announcing_16_mib_frames_cost_no_memory_and_no_leadership(
    make_cluster: ClusterFactory,
) -> None:
    # The security review's probe: 32 connections, each announcing 16 MiB and sending 4 MiB
    # (measured before: +127 MiB RSS, all held open), then one complete 16 MiB garbage frame
    # to the leader (before: 2 s of its CPU, and in 2 of 6 trials its leadership).
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    term = cluster.status(leader).term  # type: ignore[union-attr]
    pid = cluster.pid(leader)
    assert pid is not None
    host, port = cluster.config.node(leader).raft_address.rsplit(":", 1)
    before = _rss_kib(pid)
    chunk = b"\x00" * (256 * 1024)
    socks: list[tuple[socket.socket, bool]] = []
    for _ in range(32):
        sock = socket.create_connection((host, int(port)), timeout=5.0)
        try:
            sock.sendall(struct.pack("i", 16 * 1024 * 1024))
            for _ in range(16):  # 4 MiB
                sock.sendall(chunk)
            socks.append((sock, False))
        except OSError:
            socks.append((sock, True))  # the node closed it while we were still sending
    closed = sum(early or _closed_by_node(sock) for sock, early in socks)
    for sock, _ in socks:
        sock.close()
    with socket.create_connection((host, int(port)), timeout=5.0) as sock:
        frame = struct.pack("i", 16 * 1024 * 1024) + b"\x00" * (16 * 1024 * 1024)
        with contextlib.suppress(OSError):
            sock.sendall(frame)
        assert _closed_by_node(sock)
    grown_mib = (_rss_kib(pid) - before) / 1024
    print(
        f"raft-port probe: RSS +{grown_mib:.1f} MiB over {before / 1024:.1f};"
        f" {closed} of 32 closed; term {term}"
    )
    assert closed == 32, f"only {closed} of 32 connections were closed by the node"
    assert grown_mib < 16, f"the node's RSS grew by {grown_mib:.1f} MiB"
    assert cluster.wait_for_leader(10.0) == leader
    assert cluster.status(leader).term == term  # type: ignore[union-attr]


def test_idle_unauthenticated_connections_are_closed_after_the_handshake_deadline(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    node = cluster.node_ids[0]
    host, port = cluster.config.node(node).raft_address.rsplit(":", 1)
    socks = [socket.create_connection((host, int(port)), timeout=10.0) for _ in range(20)]
    try:
        # Beyond 16 at once the node closes at once; the rest within the 2 s deadline (the
        # socket timeout, 10 s, bounds the wait: an open one would time out, counted as closed
        # only if the node ended it first).
        ended = 0
        for sock in socks:
            try:
                ended += sock.recv(1) == b""
            except ConnectionResetError:
                ended += 1
        assert ended == 20
    finally:
        for sock in socks:
            sock.close()
    assert cluster.wait_for_leader(10.0)

"""The Raft port refuses what an unauthenticated peer can send before authentication."""

from __future__ import annotations

import socket
import struct

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

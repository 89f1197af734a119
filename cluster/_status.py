"""Asking nodes who they are: TLS channels, parallel Status calls, and who the leader is.

A node's Status is its *local* view, and a node can wrongly believe it leads (an isolated
or just-resumed old leader keeps saying so for a while: shared/reference/raft-pitfalls.md).
So a leader is reported only when the cluster agrees on it (`agreed_leader`).

Calls go out in parallel (gRPC futures), so one paused node costs one timeout per poll,
not one per node. Channels reconnect after at most 1 s instead of gRPC's default backoff
of up to 2 minutes: a test that restarts a node must not wait minutes to see it again.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

from ._bootstrap import TLSFiles

STATUS_TIMEOUT_S = 1.0
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def client_credentials(tls: TLSFiles) -> grpc.ChannelCredentials:
    """Trust the cluster CA and present the client certificate (nodes require one)."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=tls.key.read_bytes(),
        certificate_chain=tls.cert.read_bytes(),
    )


def secure_channel(address: str, credentials: grpc.ChannelCredentials) -> grpc.Channel:
    return grpc.secure_channel(address, credentials, options=CHANNEL_OPTIONS)


def fetch_statuses(
    channels: Mapping[str, grpc.Channel], *, digest: bool = False, timeout_s: float = STATUS_TIMEOUT_S
) -> dict[str, pb.StatusResponse | None]:
    """Every node's Status at once; None for a node that did not answer within `timeout_s`."""
    request = pb.StatusRequest(digest=digest)
    futures = {
        node_id: pb_grpc.SessionStoreStub(channel).Status.future(request, timeout=timeout_s)
        for node_id, channel in channels.items()
    }
    results: dict[str, pb.StatusResponse | None] = {}
    for node_id, future in futures.items():
        try:
            results[node_id] = future.result()
        except grpc.RpcError:
            results[node_id] = None
    return results


def agreed_leader(
    statuses: Mapping[str, pb.StatusResponse | None], grpc_addresses: Mapping[str, str]
) -> str | None:
    """The node that says it leads and that enough of the others follow, else None.

    Agreement means: the node itself plus every reachable node whose leader_address is
    the candidate's gRPC address form both a majority of the reachable nodes and a quorum
    of the whole cluster. The quorum rule keeps a lone old leader on the minority side
    from being reported; the reachable-majority rule picks the right one of two claimants.
    """
    reachable = {node_id: s for node_id, s in statuses.items() if s is not None}
    quorum = len(grpc_addresses) // 2 + 1
    for node_id, status in reachable.items():
        if not status.is_leader:
            continue
        address = grpc_addresses[node_id]
        agreeing = sum(1 for other, s in reachable.items() if other == node_id or s.leader_address == address)
        if 2 * agreeing > len(reachable) and agreeing >= quorum:
            return node_id
    return None

"""The certificates the anchors borrow from the sessionquorum cluster directory.

sessionquorum's clients must use mutual TLS; the anchors get the same so a comparison does not
reward a system for skipping encryption. The node certificates carry 127.0.0.1 among their
names and both serverAuth and clientAuth usages, so etcd members can use them for client and
peer traffic alike (sessionquorum's peers encrypt their traffic too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sessionquorum.cluster import LocalCluster


@dataclass(frozen=True, slots=True)
class AnchorTLS:
    ca: Path
    client_cert: Path
    client_key: Path
    # One (certificate, key) per server process, in member order.
    servers: tuple[tuple[Path, Path], ...]


def borrow_tls(cluster: LocalCluster) -> AnchorTLS:
    """The CA, the client pair and the node pairs of a prepared cluster directory."""
    servers = []
    for spec in cluster.config.nodes:
        if spec.tls_cert is None or spec.tls_key is None:
            raise RuntimeError(f"node {spec.id} of {cluster.data_dir} has no TLS certificate to lend")
        servers.append((spec.tls_cert, spec.tls_key))
    tls = cluster.tls_files
    return AnchorTLS(ca=tls.ca, client_cert=tls.cert, client_key=tls.key, servers=tuple(servers))

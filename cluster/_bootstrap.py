"""Create (or reuse) a cluster directory: config, Raft secret, TLS material, node data dirs.

Layout of a cluster directory (everything a local cluster needs, relocatable as a whole
because cluster.json holds paths relative to itself):

    cluster.json            the shared config (store/config.py); no secrets in it
    secrets/                0700
      raft.password         0600, guards pysyncobj's pickled peer traffic
      atrest.keys           0600, the keys values are sealed with and token hashes keyed
                            with (store/keyfile.py); `keys rotate` adds one while it runs
      ca.key                0600, kept so more certificates can be issued later
    tls/                    0700
      ca.pem                what clients and nodes trust
      n1.pem, n1.key        node certificate (serverAuth + clientAuth) and key (0600)
      client.pem, client.key  role app: what applications (web backends, examples) present
      admin.pem, admin.key    role admin: what the operator's tools (the CLI, LocalCluster) present
    n1/, n2/, ...           node data dirs, 0700 (Raft journal and snapshots are pickles:
                            whoever can write them runs code at the next start)

cluster.json is written last, atomically: it is the commit point. If it exists, the
directory is reused as it is, which is how a whole cluster restarts from its data dirs.
A request that does not match it (another node count, other overrides) is refused rather
than silently served with the old settings.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import socket
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sessionquorum.store.authz import Role
from sessionquorum.store.config import ClusterConfig, load_cluster_config, parse_cluster_config
from sessionquorum.store.errors import ConfigError
from sessionquorum.store.keyfile import new_keys, write_keys

from . import _tls
from ._errors import ClusterError

CONFIG_NAME = "cluster.json"
HOST = "127.0.0.1"
DIR_MODE = 0o700
OVERRIDE_SECTIONS = ("limits", "raft", "server")
# {"atrest": {"enabled": False}} makes a cluster that stores values as sent (test canaries).
ATREST_SECTION = "atrest"
KEY_FILE = "secrets/atrest.keys"
CLIENT_NAME = "sessionquorum-client"
ADMIN_NAME = "sessionquorum-admin"

Overrides = Mapping[str, Mapping[str, object]]
# RFC 1123 names: labels of letters, digits and inner hyphens, dot-separated.
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """What a client presents: the CA to trust, and its certificate and key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, data_dir: Path) -> TLSFiles:
        """The app-role certificate: session operations only (store/authz.py)."""
        tls = data_dir / "tls"
        return cls(ca=tls / "ca.pem", cert=tls / "client.pem", key=tls / "client.key")

    @classmethod
    def admin_in_dir(cls, data_dir: Path) -> TLSFiles:
        """The admin-role certificate: every method (listing, revoking, Configure, digests)."""
        tls = data_dir / "tls"
        return cls(ca=tls / "ca.pem", cert=tls / "admin.pem", key=tls / "admin.key")


@dataclass(frozen=True, slots=True)
class PreparedCluster:
    """A ready cluster directory; `created` is False when an existing one was reused."""

    config: ClusterConfig
    config_path: Path
    tls: TLSFiles
    created: bool
    # The operator's certificate. A directory made before roles has none until `init` or
    # `up` runs on it again: then this is `tls` (role-less, so the nodes' roleless setting rules).
    admin_tls: TLSFiles | None = None

    @property
    def admin(self) -> TLSFiles:
        return self.admin_tls or self.tls


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Ports the kernel says are free, all distinct: every socket stays bound until all are chosen."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _mkdir_private(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)


def _normalized(overrides: Overrides | None) -> dict[str, dict[str, Any]]:
    """Overrides as they would read back from JSON, without empty sections (for comparison)."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - {*OVERRIDE_SECTIONS, ATREST_SECTION})
    if unknown:
        raise ClusterError(
            f"unknown override section(s) {', '.join(unknown)} (known: {', '.join(OVERRIDE_SECTIONS)})"
        )
    result: dict[str, dict[str, Any]] = json.loads(json.dumps({k: dict(v) for k, v in overrides.items()}))
    atrest = result.get(ATREST_SECTION, {})
    if set(atrest) - {"enabled"} or not isinstance(atrest.get("enabled", True), bool):
        raise ClusterError('the atrest override takes only {"enabled": true|false}')
    if atrest.get("enabled", True):
        result.pop(ATREST_SECTION, None)  # the default: compare equal to no override
    return {k: v for k, v in result.items() if v}


def _checked_hosts(hosts: Sequence[str] | None, nodes: int) -> tuple[str, ...]:
    """One address per node (default: all 127.0.0.1), validated before anything is written.

    An IP address or a DNS name: it goes into the node's certificate as an IP or DNS SAN.
    """
    if hosts is None:
        return (HOST,) * nodes
    if isinstance(hosts, str) or len(hosts) != nodes:
        raise ClusterError(f"hosts must list one address per node ({nodes}), got {hosts!r}")
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOSTNAME.fullmatch(host):
                raise ClusterError(f"hosts must be IP addresses or DNS names, got {host!r}") from None
    return tuple(hosts)


def _node_ports(hosts: tuple[str, ...], base_ports: tuple[int, int] | None) -> list[tuple[int, int]]:
    """(raft, grpc) per node: from the kernel, or base + k for the k-th node on the same host."""
    if base_ports is None:
        # Chosen on 127.0.0.1 even for other hosts: those are fresh network namespaces of our
        # own (tests/chaos/framework/_netns.py), where nothing else listens.
        ports = free_ports(2 * len(hosts))
        return [(ports[2 * i], ports[2 * i + 1]) for i in range(len(hosts))]
    raft, grpc_port = base_ports
    result = []
    for i, host in enumerate(hosts):
        k = hosts[:i].count(host)
        result.append((raft + k, grpc_port + k))
    every = [port for pair in result for port in pair]
    if len(set(every)) != len(every) and len(set(hosts)) == 1:
        raise ClusterError(f"raft and grpc port ranges overlap for {len(hosts)} nodes on one host")
    if not all(0 < port < 65536 for port in every):
        raise ClusterError(f"ports must lie in 1..65535, got {sorted(every)}")
    return result


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_of(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]")


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _fresh_config(
    overrides: dict[str, dict[str, Any]], hosts: tuple[str, ...], ports: list[tuple[int, int]]
) -> dict[str, Any]:
    node_entries = []
    for i, (host, (raft_port, grpc_port)) in enumerate(zip(hosts, ports, strict=True)):
        node_id = f"n{i + 1}"
        node_entries.append(
            {
                "id": node_id,
                "raft": _join(host, raft_port),
                "grpc": _join(host, grpc_port),
                "tls_cert": f"tls/{node_id}.pem",
                "tls_key": f"tls/{node_id}.key",
            }
        )
    atrest = {"key_file": KEY_FILE, "enabled": overrides.get(ATREST_SECTION, {}).get("enabled", True)}
    return {
        "nodes": node_entries,
        "raft_password_file": "secrets/raft.password",
        "tls_ca": "tls/ca.pem",
        "tls_client_auth": True,
        **overrides,
        ATREST_SECTION: atrest,
    }


def _add_metrics_addresses(raw: dict[str, Any], taken: set[int]) -> None:
    """A local cluster's nodes serve /metrics on 127.0.0.1, on ports the kernel says are free."""
    nodes = raw["nodes"]
    ports = [p for p in free_ports(len(nodes) + len(taken)) if p not in taken][: len(nodes)]
    for node, port in zip(nodes, ports, strict=True):
        node["metrics"] = _join(HOST, port)


def _write_material(data_dir: Path, config: ClusterConfig) -> None:
    _mkdir_private(data_dir / "secrets")
    _mkdir_private(data_dir / "tls")
    _tls.write_private(config.raft_password_file, (secrets.token_urlsafe(32) + "\n").encode())
    # Written even when encryption is off (a canary), so switching it on needs no new secret.
    write_keys(data_dir / KEY_FILE, new_keys())
    ca = _tls.create_ca()
    assert config.tls_ca is not None  # set by _fresh_config
    _tls.write_issued(ca, config.tls_ca, data_dir / "secrets" / "ca.key")
    for node in config.nodes:
        leaf = _tls.issue_leaf(ca, node.id, (HOST, "localhost", _host_of(node.grpc_address)), server=True)
        assert node.tls_cert is not None and node.tls_key is not None
        _tls.write_issued(leaf, node.tls_cert, node.tls_key)
    client = TLSFiles.in_dir(data_dir)
    app = _tls.issue_leaf(ca, CLIENT_NAME, (CLIENT_NAME,), server=False, role=Role.APP)
    _tls.write_issued(app, client.cert, client.key)
    _issue_admin(data_dir, ca)


def _issue_admin(data_dir: Path, ca: _tls.Issued) -> None:
    admin = TLSFiles.admin_in_dir(data_dir)
    issued = _tls.issue_leaf(ca, ADMIN_NAME, (ADMIN_NAME,), server=False, role=Role.ADMIN)
    _tls.write_issued(issued, admin.cert, admin.key)


def _add_missing_admin(data_dir: Path) -> bool:
    """A directory made before roles gets its admin certificate, from the CA key it kept.

    Nothing else changes: the nodes trust the same CA, so no restart is needed, and the
    old client.pem stays what it was (role-less: `server.roleless_client_role` decides).
    """
    admin = TLSFiles.admin_in_dir(data_dir)
    ca_key = data_dir / "secrets" / "ca.key"
    ca_cert = TLSFiles.in_dir(data_dir).ca
    if admin.cert.exists() or not ca_key.exists():
        return False
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ClusterError(f"{ca_key} is not the EC key this tool writes")
    _issue_admin(data_dir, _tls.Issued(key, x509.load_pem_x509_certificate(ca_cert.read_bytes())))
    return True


def _write_json_atomically(path: Path, raw: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def open_cluster_dir(data_dir: Path) -> PreparedCluster:
    """An existing cluster directory, whatever its size; ClusterError if there is none."""
    data_dir = data_dir.resolve()
    path = data_dir / CONFIG_NAME
    if not path.exists():
        raise ClusterError(f"no cluster in {data_dir} (no {CONFIG_NAME}); create one with `up`")
    try:
        config = load_cluster_config(path)
    except ConfigError as exc:
        raise ClusterError(str(exc)) from exc
    tls = TLSFiles.in_dir(data_dir)
    needed = [config.raft_password_file, tls.ca, tls.cert, tls.key]
    needed += [p for n in config.nodes if (p := config.key_file_of(n)) is not None]
    needed += [p for n in config.nodes for p in (n.tls_cert, n.tls_key) if p is not None]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise ClusterError(f"cluster directory {data_dir} is incomplete, missing: {', '.join(missing)}")
    for node in config.nodes:
        _mkdir_private(data_dir / node.id)
    admin = TLSFiles.admin_in_dir(data_dir)
    admin_tls = admin if admin.cert.exists() and admin.key.exists() else None
    return PreparedCluster(config=config, config_path=path, tls=tls, created=False, admin_tls=admin_tls)


def prepare_cluster_dir(
    data_dir: Path,
    nodes: int = 3,
    overrides: Overrides | None = None,
    hosts: Sequence[str] | None = None,
    base_ports: tuple[int, int] | None = None,
) -> PreparedCluster:
    """Create a cluster directory for `nodes` nodes, or reuse the one already there.

    `overrides` maps "limits" / "raft" / "server" to keys of those config sections. On
    reuse, passing overrides that differ from the stored ones is refused; passing None
    accepts whatever is stored.

    `hosts` gives node i its Raft and gRPC addresses on hosts[i] instead of 127.0.0.1
    (e.g. its network namespace's IP, see tests/chaos/framework/_netns.py); its certificate
    covers that IP too. Hosts may be DNS names (for machines, `sessionquorum init --hosts`).

    `base_ports` (raft, grpc) fixes the ports: node i listens on base + k, k counting the
    nodes before it on the same host; None lets the kernel choose free ones on this machine.
    On reuse, hosts or ports that differ from the stored ones are refused; None accepts them.
    """
    if nodes < 1:
        raise ClusterError(f"a cluster needs at least 1 node, got {nodes}")
    wanted = _normalized(overrides)
    wanted_hosts = _checked_hosts(hosts, nodes)
    wanted_ports = None if base_ports is None else _node_ports(wanted_hosts, base_ports)
    data_dir = data_dir.resolve()
    path = data_dir / CONFIG_NAME
    if path.exists():
        try:
            _add_missing_admin(data_dir)
        except (OSError, ValueError) as exc:
            raise ClusterError(f"cannot add the admin certificate to {data_dir}: {exc}") from exc
        prepared = open_cluster_dir(data_dir)
        have = len(prepared.config.nodes)
        if have != nodes:
            raise ClusterError(
                f"{data_dir} holds a {have}-node cluster, not {nodes}: "
                f"use --nodes {have}, another data dir, or remove this one"
            )
        if overrides is not None:
            stored = _normalized(
                {
                    k: ({"enabled": v.get("enabled", True)} if k == ATREST_SECTION else v)
                    for k, v in json.loads(path.read_text()).items()
                    if k in (*OVERRIDE_SECTIONS, ATREST_SECTION)
                }
            )
            if stored != wanted:
                raise ClusterError(
                    f"{path} was made with overrides {stored}, not {wanted}: use another data dir"
                )
        if hosts is not None:
            stored_hosts = tuple(_host_of(n.raft_address) for n in prepared.config.nodes)
            if stored_hosts != wanted_hosts:
                raise ClusterError(
                    f"{path} was made for hosts {list(stored_hosts)}, not {list(wanted_hosts)}: "
                    "use another data dir"
                )
        if wanted_ports is not None:
            stored_ports = [
                (_port_of(n.raft_address), _port_of(n.grpc_address)) for n in prepared.config.nodes
            ]
            if stored_ports != wanted_ports:
                raise ClusterError(f"{path} was made with other ports ({stored_ports}): use another data dir")
        return prepared
    ports = wanted_ports if wanted_ports is not None else _node_ports(wanted_hosts, None)
    raw = _fresh_config(wanted, wanted_hosts, ports)
    if hosts is None and base_ports is None:
        _add_metrics_addresses(raw, {port for pair in ports for port in pair})
    try:
        # Validate before writing anything, so a typo in an override leaves no half-made dir.
        config = parse_cluster_config(raw, data_dir)
    except ConfigError as exc:
        raise ClusterError(f"invalid overrides: {exc}") from exc
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        _write_material(data_dir, config)
        for node in config.nodes:
            _mkdir_private(data_dir / node.id)
        _write_json_atomically(path, raw)
        config = load_cluster_config(path)
    except OSError as exc:
        raise ClusterError(f"cannot create cluster directory {data_dir}: {exc}") from exc
    return PreparedCluster(
        config=config,
        config_path=path,
        tls=TLSFiles.in_dir(data_dir),
        created=True,
        admin_tls=TLSFiles.admin_in_dir(data_dir),
    )

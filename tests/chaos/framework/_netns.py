"""NetnsNetwork: one network namespace per node on a private bridge, and partitions between them.

On plain loopback every node shares one network stack, and pysyncobj keeps one TCP
connection per node pair, so port-based rules cut only half the flows. Here each node gets
its own stack, and a partition is a set of DROP rules by peer IP *inside* the namespaces
(see _partition.py for what is cut, tests/chaos/DESIGN.md for the layout):

    root namespace (the test process, clients)
      bridge <prefix>br  10.213.K.1/24 ---- veth <prefix>n1h ==== eth0 10.213.K.11  netns <prefix>-n1
                                       ---- veth <prefix>n2h ==== eth0 10.213.K.12  netns <prefix>-n2
                                       ...

Safety: everything is created under one unique prefix, in a /24 of 10.213.0.0/16 that no
route of this machine overlaps, claimed by a lock file so parallel runs never share one.
Nothing of the root namespace is changed beyond adding and removing our bridge and veth
ends (no root iptables rules, no sysctls). Teardown removes only what this object created,
also after a failure half-way through setup, and runs again at garbage collection or exit.
Nodes get no default route: they can reach the subnet and nothing beyond it.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import random
import re
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from sessionquorum.cluster import ClusterError, LocalCluster, Overrides

from . import _partition
from ._partition import Partition

logger = logging.getLogger(__name__)

SUBNET_PREFIX = "10.213"  # networks are 10.213.K.0/24; unusual on purpose
BRIDGE_HOST = 1
FIRST_NODE_HOST = 11
MAX_NODES = 200
IFNAME_MAX = 15  # IFNAMSIZ - 1
NS_IFNAME = "eth0"
PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]{1,7}$")
NODE_ID_PATTERN = re.compile(r"^[a-z0-9]{1,5}$")
COMMAND_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 2.0
PROBE_PORT = 9  # discard: nothing listens in a fresh namespace, so a reachable node answers RST
LOCK_DIR = Path(tempfile.gettempdir()) / "sessionquorum-netns"
REQUIRED_TOOLS = ("ip", "iptables", "iptables-restore")


def new_prefix() -> str:
    """A fresh name prefix: "sq" and 4 random hex digits."""
    return "sq" + secrets.token_hex(2)


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (not root, a tool missing, ip netns failing), or None."""
    if os.geteuid() != 0:
        return "not running as root"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (Debian packages iproute2, iptables)"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns list` failed: {exc}"
    return None


@dataclass(frozen=True, slots=True)
class NetnsLayout:
    """Names and addresses of one network (pure: creating it is NetnsNetwork's job)."""

    prefix: str
    node_ids: tuple[str, ...]
    third_octet: int

    def __post_init__(self) -> None:
        if not PREFIX_PATTERN.match(self.prefix):
            raise ValueError(f"prefix must match {PREFIX_PATTERN.pattern}, got {self.prefix!r}")
        if not 1 <= len(self.node_ids) <= MAX_NODES:
            raise ValueError(f"need 1 to {MAX_NODES} nodes, got {len(self.node_ids)}")
        bad = [n for n in self.node_ids if not NODE_ID_PATTERN.match(n)]
        if bad or len(set(self.node_ids)) != len(self.node_ids):
            raise ValueError(f"node ids must be distinct and match {NODE_ID_PATTERN.pattern}: {bad}")
        if not 0 <= self.third_octet <= 255:
            raise ValueError(f"third octet must be 0..255, got {self.third_octet}")
        names = self.link_names()
        too_long = [n for n in names if len(n) > IFNAME_MAX]
        if too_long or len(set(names)) != len(names):
            raise ValueError(f"interface names must be distinct and at most {IFNAME_MAX} chars: {names}")

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{SUBNET_PREFIX}.{self.third_octet}.0/24")

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def bridge_ip(self) -> str:
        return str(self.subnet[BRIDGE_HOST])

    def _index(self, node_id: str) -> int:
        try:
            return self.node_ids.index(node_id)
        except ValueError:
            raise ClusterError(f"unknown node {node_id!r} (known: {', '.join(self.node_ids)})") from None

    def namespace(self, node_id: str) -> str:
        return f"{self.prefix}-{self.node_ids[self._index(node_id)]}"

    def host_veth(self, node_id: str) -> str:
        """The root-namespace end of the node's veth pair, a port of the bridge."""
        return f"{self.prefix}{self.node_ids[self._index(node_id)]}h"

    def address(self, node_id: str) -> str:
        return str(self.subnet[FIRST_NODE_HOST + self._index(node_id)])

    @property
    def addresses(self) -> dict[str, str]:
        return {n: self.address(n) for n in self.node_ids}

    def link_names(self) -> list[str]:
        """Every interface name created in the root namespace (bridge and host veth ends)."""
        return [f"{self.prefix}br", *(f"{self.prefix}{n}h" for n in self.node_ids)]

    def namespaces(self) -> list[str]:
        return [f"{self.prefix}-{n}" for n in self.node_ids]


def _run(argv: Sequence[str], stdin: str | None = None, what: str | None = None) -> str:
    """Run a tool; ClusterError with its stderr if it fails."""
    what = what or shlex.join(argv)
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"`{what}` failed: {exc}") from exc
    if done.returncode != 0:
        raise ClusterError(f"`{what}` exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _existing() -> tuple[list[str], list[str]]:
    """The names of all network namespaces, and of all links in the root namespace."""
    namespaces = [line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line.strip()]
    links = [str(link["ifname"]) for link in json.loads(_run(["ip", "-j", "link", "show"]) or "[]")]
    return namespaces, links


def _still_there(name: str, *, namespace: bool) -> bool:
    try:
        namespaces, links = _existing()
    except ClusterError:
        return True  # cannot tell: report the failure rather than hide it
    return name in (namespaces if namespace else links)


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination the root namespace routes (all tables), default routes aside."""
    routes = json.loads(_run(["ip", "-4", "-j", "route", "show", "table", "all"]) or "[]")
    used = []
    for route in routes:
        dst = route.get("dst", "default")
        if dst != "default":
            used.append(ipaddress.IPv4Network(dst, strict=False))
    return used


def _claim_subnet(used: Sequence[ipaddress.IPv4Network]) -> tuple[int, IO[bytes]]:
    """A third octet whose /24 no route overlaps, held by an exclusive lock on a file."""
    LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
    info = LOCK_DIR.lstat()  # in a shared /tmp: refuse a symlink or someone else's directory
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise ClusterError(f"{LOCK_DIR} must be a directory of ours that others cannot write")
    octets = list(range(256))
    random.shuffle(octets)
    for octet in octets:
        net = ipaddress.IPv4Network(f"{SUBNET_PREFIX}.{octet}.0/24")
        if any(net.overlaps(u) for u in used):
            continue
        lock = (LOCK_DIR / f"{net.network_address}.lock").open("wb")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        # Checked again under the lock: a run that held it may have made its bridge meanwhile.
        if any(net.overlaps(u) for u in _used_networks()):
            lock.close()
            continue
        return octet, lock
    raise ClusterError(f"no free /24 left in {SUBNET_PREFIX}.0.0/16 for a test network")


@dataclass
class _Created:
    """What setup made so far, in order: teardown undoes exactly this, newest first."""

    links: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    lock: IO[bytes] | None = None


def _teardown(created: _Created) -> list[str]:
    """Remove what `created` lists; returns the errors (teardown never stops half-way)."""
    errors = []
    for ns in list(created.namespaces):
        with contextlib.suppress(ClusterError):
            pids = _run(["ip", "netns", "pids", ns]).split()
            if pids:
                # Not ours to kill: without its name and veth the namespace is empty and dies with them.
                logger.warning("processes still in namespace %s at teardown: %s", ns, " ".join(pids))
    for link in reversed(created.links):
        try:
            _run(["ip", "link", "del", link])  # deleting one veth end deletes its peer
        except ClusterError as exc:
            if _still_there(link, namespace=False):  # already gone is what we wanted
                errors.append(str(exc))
        created.links.remove(link)
    for ns in reversed(created.namespaces):
        try:
            _run(["ip", "netns", "del", ns])
        except ClusterError as exc:
            if _still_there(ns, namespace=True):
                errors.append(str(exc))
        created.namespaces.remove(ns)
    if created.lock is not None:
        created.lock.close()
        created.lock = None
    for error in errors:
        logger.error("network teardown: %s", error)
    return errors


# Run in a namespace (or the root one) by `python -c`: argv is timeout, port, addresses.
# Probes go out in parallel, so unreachable peers cost one timeout, not one each.
_PROBE_SCRIPT = """
import json, socket, sys, threading
timeout, port, addresses = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
result = {}
def probe(address):
    with socket.socket() as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
            result[address] = True
        except ConnectionRefusedError:
            result[address] = True  # an RST came back: the path works
        except OSError:
            result[address] = False  # dropped (timeout) or refused locally (EPERM)
threads = [threading.Thread(target=probe, args=(a,)) for a in addresses]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(result))
"""


class NetnsNetwork:
    """`nodes` network namespaces on one bridge, made in __init__, removed by close()."""

    def __init__(self, prefix: str | None = None, nodes: int = 3) -> None:
        prefix = prefix or new_prefix()
        node_ids = tuple(f"n{i + 1}" for i in range(nodes))
        NetnsLayout(prefix, node_ids, 0)  # validate names before touching anything
        self._created = _Created()
        self._finalizer = weakref.finalize(self, _teardown, self._created)
        try:
            self._check_prefix_unused(prefix)
            octet, self._created.lock = _claim_subnet(_used_networks())
            self.layout = NetnsLayout(prefix, node_ids, octet)
            self._create()
            self._probe()
        except BaseException:
            # Undo what was made; its errors are logged, the original failure is the one raised.
            _teardown(self._created)
            self._finalizer.detach()
            raise
        self._partition = _partition.healed(node_ids)
        logger.info("network %s on %s: %s", prefix, self.layout.subnet, self.layout.addresses)

    # -- layout -------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self.layout.prefix

    @property
    def node_ids(self) -> tuple[str, ...]:
        return self.layout.node_ids

    @property
    def hosts(self) -> tuple[str, ...]:
        """Node i's IP at index i: what prepare_cluster_dir(hosts=...) takes."""
        return tuple(self.layout.address(n) for n in self.node_ids)

    def host(self, node_index: int) -> str:
        return self.hosts[node_index]

    @property
    def bridge_ip(self) -> str:
        """The root namespace's address on the bridge: where clients' traffic comes from."""
        return self.layout.bridge_ip

    def namespace(self, node_id: str) -> str:
        return self.layout.namespace(node_id)

    def wrap(self, node_id: str, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the node's namespace; `ip netns exec` execs it, so the pid is the node's."""
        return ["ip", "netns", "exec", self.namespace(node_id), *argv]

    # -- partitions ---------------------------------------------------------------------

    def apply(self, partition: Partition) -> None:
        """Make `partition` the one in force: each namespace's filter table is replaced whole."""
        if partition.nodes != self.node_ids:
            raise ClusterError(f"partition is for nodes {partition.nodes}, network has {self.node_ids}")
        addresses = self.layout.addresses
        for node_id in self.node_ids:
            rules = _partition.iptables_rules(partition, node_id, addresses)
            _run(["ip", "netns", "exec", self.namespace(node_id), "iptables-restore", "-w", "5"], stdin=rules)
        self._partition = partition
        logger.info("network %s: %s", self.prefix, partition)

    def isolate(self, node_id: str) -> Partition:
        return self._apply(_partition.isolate(self.node_ids, node_id))

    def split(self, groups: Sequence[Sequence[str]]) -> Partition:
        return self._apply(_partition.split(self.node_ids, groups))

    def bridge_partition(self) -> Partition:
        return self._apply(_partition.bridge(self.node_ids))

    def ring(self, order: Sequence[str] | None = None) -> Partition:
        return self._apply(_partition.ring(self.node_ids, order))

    def heal(self) -> Partition:
        return self._apply(_partition.healed(self.node_ids))

    def _apply(self, partition: Partition) -> Partition:
        self.apply(partition)
        return partition

    def partitions(self) -> Partition:
        """The partition in force (str() describes it, e.g. "isolate n1: n1 | n2 n3")."""
        return self._partition

    def probe(
        self, from_node: str | None, to_nodes: Sequence[str] | None = None, timeout_s: float = PROBE_TIMEOUT_S
    ) -> dict[str, bool]:
        """Whether TCP from `from_node` (None: the root namespace) reaches each other node now.

        Connects to a closed port: an RST means the path works, silence or EPERM that it is cut.
        """
        targets = [n for n in (to_nodes or self.node_ids) if n != from_node]
        argv = [sys.executable, "-c", _PROBE_SCRIPT, str(timeout_s), str(PROBE_PORT)]
        argv += [self.layout.address(n) for n in targets]
        out = _run(argv if from_node is None else self.wrap(from_node, argv), what=f"probe from {from_node}")
        by_address: dict[str, bool] = json.loads(out)
        return {n: by_address[self.layout.address(n)] for n in targets}

    def rules(self, node_id: str) -> str:
        """`iptables -S` inside the node's namespace: what the kernel really holds."""
        return _run(["ip", "netns", "exec", self.namespace(node_id), "iptables", "-w", "5", "-S"])

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Remove everything this object created; idempotent. ClusterError if something stayed."""
        errors = _teardown(self._created)
        self._finalizer.detach()
        if errors:
            raise ClusterError("network teardown left something behind: " + "; ".join(errors))

    def __enter__(self) -> NetnsNetwork:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- setup --------------------------------------------------------------------------

    @staticmethod
    def _check_prefix_unused(prefix: str) -> None:
        taken = [name for names in leftovers(prefix).values() for name in names]
        if taken:
            raise ClusterError(f"prefix {prefix!r} is in use already: {', '.join(taken)}")

    def _create(self) -> None:
        layout, created = self.layout, self._created
        _run(["ip", "link", "add", layout.bridge, "type", "bridge"])
        created.links.append(layout.bridge)
        _run(["ip", "addr", "add", f"{layout.bridge_ip}/24", "dev", layout.bridge])
        _run(["ip", "link", "set", layout.bridge, "up"])
        for node_id in layout.node_ids:
            ns, veth = layout.namespace(node_id), layout.host_veth(node_id)
            _run(["ip", "netns", "add", ns])
            created.namespaces.append(ns)
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            # The peer end is born inside the namespace: it never exists in the root one.
            _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", NS_IFNAME, "netns", ns])
            created.links.append(veth)
            _run(["ip", "link", "set", veth, "master", layout.bridge, "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{layout.address(node_id)}/24", "dev", NS_IFNAME])
            _run(["ip", "-n", ns, "link", "set", NS_IFNAME, "up"])

    def _probe(self) -> None:
        """Fail now, clearly, if the test process cannot reach a node or node 1 its peers.

        A host with br_netfilter and a root FORWARD chain that drops would silently cut
        every node-to-node link; that is the host's policy, and we do not change it.
        """
        unreachable = [n for n, ok in self.probe(None).items() if not ok]
        if unreachable:
            raise ClusterError(f"the root namespace cannot reach {', '.join(unreachable)} over the bridge")
        first = self.node_ids[0]
        unreachable = [n for n, ok in self.probe(first).items() if not ok]
        if unreachable:
            raise ClusterError(
                f"{first} cannot reach {', '.join(unreachable)} over bridge {self.layout.bridge}: is bridged "
                "traffic filtered by the root FORWARD chain (net.bridge.bridge-nf-call-iptables=1)?"
            )


@contextmanager
def netns_cluster(
    data_dir: Path, nodes: int = 3, *, overrides: Overrides | None = None, prefix: str | None = None
) -> Iterator[tuple[LocalCluster, NetnsNetwork]]:
    """A LocalCluster (not started) whose nodes run in the namespaces of a new NetnsNetwork.

    On exit the nodes this cluster started are stopped first, then the network is removed.
    """
    with NetnsNetwork(prefix, nodes) as net:
        cluster = LocalCluster(data_dir, nodes, overrides=overrides, hosts=net.hosts, node_wrapper=net.wrap)
        try:
            yield cluster, net
        finally:
            cluster.stop()
            cluster.close_channels()


def leftovers(prefix: str) -> dict[str, list[str]]:
    """Namespaces and root-namespace links whose names start with `prefix` (e.g. after teardown)."""
    namespaces, links = _existing()
    return {
        "namespaces": [n for n in namespaces if n.startswith(prefix)],
        "links": [n for n in links if n.startswith(prefix)],
    }

"""Configuration: read in exactly one place, handed down as frozen dataclasses.

A cluster is described by one JSON file shared by every node (and by the launcher that
writes it). Paths inside it are relative to the file's own folder. Secrets are never in
the file itself, only the paths of files that hold them (0600), so the file can be shown
and copied freely.

    {
      "nodes": [
        {"id": "n1", "raft": "127.0.0.1:41001", "grpc": "127.0.0.1:51001",
         "metrics": "127.0.0.1:9101", "tls_cert": "tls/n1.pem", "tls_key": "tls/n1.key"},
        ...
      ],
      "raft_password_file": "secrets/raft.password",
      "tls_ca": "tls/ca.pem",
      "tls_client_auth": true,
      "limits": {"max_sessions_per_principal": 32},
      "raft": {"election_min_s": 0.3},
      "server": {"max_message_bytes": 1048576},
      "atrest": {"key_file": "secrets/atrest.keys", "enabled": true}
    }

`atrest` (encryption at rest, store/DESIGN.md): the key file every node reads (a node entry
may name its own with "key_file"); without the section, or with "enabled": false, values
are stored as sent and token hashes unkeyed (clusters made before it, and the canary).

Any key of `Limits`, `RaftSettings` or `ServerSettings` may be overridden under its
section; an unknown key is an error (a typo must not silently leave a default in force).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .commands import LATER_LIMITS, SUPPORTED_LEVEL
from .errors import ConfigError
from .events import check_bounds as check_event_bounds

DAY_MS = 24 * 3600 * 1000
MINUTE_MS = 60 * 1000
# Timeout profiles: name -> (most idle timeout, most absolute lifetime), in ms. "high":
# OWASP's high-value applications (idle 2-5 min, absolute 4-8 h); "standard": ASVS 4 L2
# (30 min idle, 12 h absolute). SECURITY.md lists them with their sources.
TIMEOUT_PROFILES: dict[str, tuple[int, int] | None] = {
    "none": None,
    "high": (5 * MINUTE_MS, 4 * 60 * MINUTE_MS),
    "standard": (30 * MINUTE_MS, 12 * 60 * MINUTE_MS),
}
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True, slots=True)
class Limits:
    """Every size and count the store bounds.

    Replicated state, not per-node configuration: apply reads the limits the log set (a
    `Configure` command), never a node's own file. The file's `limits` section only seeds a
    new cluster (the first leader proposes it once); later changes go through
    `python -m sessionquorum.cluster config set`, which takes effect at one log index on
    every node.
    """

    max_principal_bytes: int = 256
    max_handle_bytes: int = 64
    max_attribute_name_bytes: int = 128
    max_attribute_value_bytes: int = 16 * 1024
    max_attributes_per_session: int = 64
    # Names plus values of all attributes of one session.
    max_session_bytes: int = 64 * 1024
    max_sessions_per_principal: int = 32
    # What a create (or a login rotate) does when the principal is at the cap:
    # "evict_oldest" ends the principal's least recently created session in the same
    # command (reported as evicted_handles); "reject" refuses with RESOURCE_EXHAUSTED.
    principal_cap_policy: str = "evict_oldest"
    max_idle_timeout_ms: int = 30 * DAY_MS
    max_absolute_timeout_ms: int = 400 * DAY_MS
    max_sessions: int = 5_000_000
    # Exactly-once table: one entry per client id, dropped after this much idle time
    # (in replicated time) or when the table is full (least recently used first).
    dedup_ttl_ms: int = 3600 * 1000
    max_dedup_clients: int = 100_000
    # Most sessions one expire command removes, so one log entry stays small.
    expire_batch: int = 1000
    # Session-security operations (command level 5, store/secops.py). Left out of the wire
    # form while at their defaults (`limits_to_wire`), so older releases read it unchanged.
    # Ended sessions' token hashes refused for reuse until their old absolute deadline; at
    # the cap the oldest tombstone goes first.
    max_tombstones: int = 1_000_000
    # How long a rotated-away token still serves (in-flight requests of the same browser);
    # a use after it is a reuse (the theft signal of OAuth refresh-token rotation).
    rotation_grace_ms: int = 10_000
    # "on": a detected reuse also revokes the session the token was rotated into.
    revoke_on_reuse: str = "off"
    max_disabled_principals: int = 100_000
    # "none", or a profile of store/secops.py PROFILES: the most idle and absolute timeout a
    # session gets (OWASP / ASVS); a create or update asking for more gets the profile's.
    timeout_profile: str = "none"

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and value <= 0:
                raise ConfigError(f"limits.{f.name} must be > 0, got {value}")
        if self.principal_cap_policy not in ("evict_oldest", "reject"):
            raise ConfigError(
                f"limits.principal_cap_policy must be 'evict_oldest' or 'reject', "
                f"got {self.principal_cap_policy!r}"
            )
        if self.revoke_on_reuse not in ("on", "off"):
            raise ConfigError(f"limits.revoke_on_reuse must be 'on' or 'off', got {self.revoke_on_reuse!r}")
        if self.timeout_profile not in TIMEOUT_PROFILES:
            raise ConfigError(
                f"limits.timeout_profile must be one of {', '.join(TIMEOUT_PROFILES)}, "
                f"got {self.timeout_profile!r}"
            )


def limits_to_pairs(limits: Limits) -> tuple[tuple[str, int | str], ...]:
    """The wire form of a Configure command: every field, sorted by name."""
    return tuple(sorted((f.name, getattr(limits, f.name)) for f in dataclasses.fields(limits)))


def limits_to_wire(limits: Limits) -> tuple[tuple[str, int | str], ...]:
    """What Configure commands and snapshots carry: every limit but the level-5 ones at their
    default, so a cluster that never changed them writes what older releases read."""
    defaults = Limits()
    return tuple(
        (name, value)
        for name, value in limits_to_pairs(limits)
        if name not in LATER_LIMITS or value != getattr(defaults, name)
    )


def limits_from_pairs(pairs: Any) -> Limits:
    """Build Limits from name -> value pairs (a Configure command, or the CLI); ConfigError if bad."""
    try:
        raw = dict(pairs)
    except (TypeError, ValueError) as exc:
        raise ConfigError("limits must be name/value pairs") from exc
    return _section(Limits, raw, "limits")


@dataclass(frozen=True, slots=True)
class RaftSettings:
    """pysyncobj settings; store/DESIGN.md gives the measurement behind each default."""

    election_min_s: float = 0.4
    election_max_s: float = 1.2
    append_entries_period_s: float = 0.01
    tick_period_s: float = 0.005
    connection_retry_s: float = 0.5
    connection_timeout_s: float = 1.5
    leader_fallback_s: float = 1.0
    # Snapshots and compaction (store/DESIGN.md): a node snapshots about every this many
    # log entries (fewer when entries are large, so its journal stays near half of
    # journal_max_bytes), staggered across nodes by log index...
    compaction_entries: int = 65_536
    # ...and at once when its journal reaches this size, so a data directory stays under
    # 64 MiB plus twice the latest snapshot however many writes it takes.
    journal_max_bytes: int = 32 * 1024 * 1024
    # A snapshot travels to a lagging follower in chunks of this size (one peer message each;
    # the peer message cap is 16 MiB).
    snapshot_chunk_bytes: int = 1024 * 1024
    # An append message carries entries up to this size. pysyncobj sends ONE entry at least
    # this large in pieces, by a path that bypasses our log-matching fix and whose last piece
    # is mislabelled (followers logged EOFError tracebacks for 64 KiB sessions at its default
    # of 64 KiB). Above the largest request gRPC admits (server.max_message_bytes), no
    # entry ever takes that path.
    append_batch_bytes: int = 4 * 1024 * 1024
    # "fsync": the journal is fsynced before any Raft message leaves while it holds unsynced
    # appends (group commit): an acknowledged write survives an OS crash or power loss of
    # every node. "none": written to the OS before any message leaves, never fsynced: it
    # survives kill -9 of every process, not an OS crash of a majority. Term and vote are
    # fsynced in both modes.
    durability: str = "fsync"
    commands_queue_size: int = 100_000
    # PreVote (store/DESIGN.md): a node that cannot win an election does not raise its term.
    # Off only to measure what it prevents.
    pre_vote: bool = True
    # Leader leases for reads (store/DESIGN.md, "Leases"): a leader whose read round a
    # majority confirmed answers reads without a round for 3/4 of election_min_s after it.
    lease_reads: bool = True
    # A leadership transfer (`leader transfer`, and a leader asked to stop) waits at most this
    # long for the target to catch up and win; proposals are held meanwhile.
    transfer_timeout_s: float = 2.0
    # Live membership (`member add|remove`): pysyncobj's dynamic membership change with our
    # fixes (store/DESIGN.md, "Membership"). Off: MemberAdd / MemberRemove are refused.
    dynamic_membership: bool = True
    # Packed entries (store/_packing.py, command level 5): at most this many waiting
    # commands, and this many bytes of them, share one log entry. 1 turns packing off.
    # The byte bound stays well under pysyncobj's 64 KiB chunking default.
    pack_commands: int = 128
    pack_bytes: int = 32 * 1024

    def validate(self) -> None:
        if not 0 < self.transfer_timeout_s <= 60:
            raise ConfigError("raft.transfer_timeout_s must be > 0 and at most 60")
        if not 0 < self.election_min_s < self.election_max_s:
            raise ConfigError("raft.election_min_s must be > 0 and < raft.election_max_s")
        if self.append_entries_period_s * 3 > self.election_min_s:
            raise ConfigError("raft.append_entries_period_s must be at most a third of election_min_s")
        if self.durability not in ("fsync", "none"):
            raise ConfigError(f"raft.durability must be 'fsync' or 'none', got {self.durability!r}")
        if self.compaction_entries < 16 or self.journal_max_bytes < 64 * 1024:
            raise ConfigError("raft.compaction_entries must be >= 16 and raft.journal_max_bytes >= 65536")
        if not 64 * 1024 <= self.append_batch_bytes <= 8 * 1024 * 1024:
            raise ConfigError("raft.append_batch_bytes must be 65536 to 8388608 (half the peer message cap)")
        if not 4096 <= self.snapshot_chunk_bytes <= 8 * 1024 * 1024:
            raise ConfigError("raft.snapshot_chunk_bytes must be 4096 to 8388608 (half the peer message cap)")
        if not 1 <= self.pack_commands <= 1024 or not 1024 <= self.pack_bytes <= 48 * 1024:
            raise ConfigError("raft.pack_commands must be 1 to 1024 and raft.pack_bytes 1024 to 49152")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The gRPC front of a node."""

    max_message_bytes: int = 1024 * 1024
    # How long the node waits for a proposed command to be applied before it answers
    # UNKNOWN (the command may still commit; the client retries with the same id).
    apply_timeout_s: float = 5.0
    # A touching validate writes to the log only when last access is older than this:
    # the idle timeout is therefore enforced to within this bound (touch coalescing).
    touch_interval_ms: int = 1000
    # How often the leader looks for expired sessions and proposes a sweep.
    sweep_interval_s: float = 1.0
    # How long a stopping node lets in-flight calls finish.
    grace_shutdown_s: float = 2.0
    # How far the leader's stamped time may run ahead of the replicated time plus the real
    # (monotonic) time elapsed since: a wall clock further ahead is logged, reported by
    # Status and not trusted (store/clock.py).
    clock_drift_ms: int = 500
    # UNSAFE, for the stale-read test's canary only: answer linearizable reads from this
    # node's local state without the read barrier, so a deposed leader that has not noticed
    # serves stale data. It exists to prove that test can fail; the node logs a WARNING.
    unsafe_skip_read_barrier: bool = False
    # "text" (one line per event, for people) or "json" (one JSON object per line with the
    # node id and term, for log pipelines); the node's --log-format flag overrides it.
    log_format: str = "text"
    # The role of a client certificate that names none (store/authz.py): "app" (least
    # privilege that keeps applications working), "admin" (an operator finishing an upgrade
    # from a cluster made before roles, whose one client.pem did everything), or "none".
    roleless_client_role: str = "app"
    # UNSAFE, for the authorization test's canary only: every caller may call every method.
    unsafe_skip_authorization: bool = False
    # The lifecycle event ring's bounds (store/events.py). They are replicated state: the
    # first leader at command level 5 proposes these from its file (EnableEvents), and the
    # log's values apply on every node from then on, whatever its file says.
    events_retention_count: int = 65_536
    events_retention_bytes: int = 4 * 1024 * 1024
    # Concurrent Events streams one node serves; one more is refused RESOURCE_EXHAUSTED.
    max_event_streams: int = 64

    def validate(self) -> None:
        problem = check_event_bounds(self.events_retention_count, self.events_retention_bytes)
        if problem:
            raise ConfigError(f"server.events_retention_*: {problem}")
        if self.max_event_streams < 1:
            raise ConfigError("server.max_event_streams must be >= 1")
        if self.max_message_bytes < 64 * 1024:
            raise ConfigError("server.max_message_bytes must be at least 65536")
        if self.apply_timeout_s <= 0 or self.sweep_interval_s <= 0 or self.touch_interval_ms < 0:
            raise ConfigError("server timings must be positive")
        if self.clock_drift_ms < 0:
            raise ConfigError("server.clock_drift_ms must be >= 0")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"server.log_format must be 'text' or 'json', got {self.log_format!r}")
        if self.roleless_client_role not in ("app", "admin", "none"):
            got = self.roleless_client_role
            raise ConfigError(f"server.roleless_client_role must be 'app', 'admin' or 'none', got {got!r}")


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One member as every node and client sees it."""

    id: str
    raft_address: str
    grpc_address: str
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # host:port of this node's Prometheus endpoint (plain HTTP, `/metrics`); None: no
    # endpoint. Per node, like the other addresses: nodes sharing a host need their own
    # ports. Port 0 lets the kernel choose (the node logs it).
    metrics_address: str | None = None
    # This node's at-rest key file, when it is not the cluster's shared one (atrest.key_file).
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    nodes: tuple[NodeSpec, ...]
    raft_password_file: Path
    tls_ca: Path | None
    tls_client_auth: bool = True
    limits: Limits = field(default_factory=Limits)
    raft: RaftSettings = field(default_factory=RaftSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    source: Path | None = None
    # The at-rest key file (store/keyfile.py); None: values and token hashes stored as sent.
    atrest_key_file: Path | None = None

    def key_file_of(self, node: NodeSpec) -> Path | None:
        """The key file `node` reads, or None when encryption at rest is off."""
        if self.atrest_key_file is None:
            return None
        return node.key_file or self.atrest_key_file

    # SHA-256 fingerprints of client certificates the nodes refuse (store/authz.py), one per
    # line; default: revoked.txt beside the CA file. Watched while the node runs; a missing
    # file revokes nothing (`sessionquorum certs rotate` writes it).
    tls_revoked_file: Path | None = None

    def node(self, node_id: str) -> NodeSpec:
        for spec in self.nodes:
            if spec.id == node_id:
                return spec
        known = ", ".join(n.id for n in self.nodes)
        raise ConfigError(f"node {node_id!r} is not in the cluster config (known: {known})")

    def grpc_address_of_raft(self, raft_address: str) -> str | None:
        """Map a Raft peer address (what pysyncobj knows) to its gRPC address (what clients need)."""
        for spec in self.nodes:
            if spec.raft_address == raft_address:
                return spec.grpc_address
        return None

    @property
    def grpc_endpoints(self) -> tuple[str, ...]:
        return tuple(n.grpc_address for n in self.nodes)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything one node process needs, resolved."""

    cluster: ClusterConfig
    node: NodeSpec
    data_dir: Path
    # The highest command level this node applies (commands.SUPPORTED_LEVEL); lower only to
    # act as an older release in upgrade tests.
    command_level: int = SUPPORTED_LEVEL

    @property
    def peers(self) -> tuple[NodeSpec, ...]:
        return tuple(n for n in self.cluster.nodes if n.id != self.node.id)


_T = TypeVar("_T", Limits, RaftSettings, ServerSettings)


def _section(cls: type[_T], raw: Any, name: str) -> _T:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name} must be an object")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) in {name}: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    defaults = cls()
    for key, value in raw.items():
        default = getattr(defaults, key)
        ok = isinstance(value, type(default)) and isinstance(value, bool) == isinstance(default, bool)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ConfigError(f"{name}.{key} must be {type(default).__name__}, got {value!r}")
        values[key] = type(default)(value)
    section = cls(**values)
    section.validate()
    return section


def _path(base: Path, raw: Any, what: str) -> Path:
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"{what} must be a non-empty string path")
    p = Path(raw)
    return p if p.is_absolute() else base / p


def split_address(address: str) -> tuple[str, int]:
    """("host", port) of "host:port" or "[v6]:port"; ConfigError if it is not one."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def _metrics_address(raw: Any, index: int) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"nodes[{index}].metrics must be a non-empty host:port string")
    split_address(raw)
    return raw


def _atrest_key_file(raw: Any, base: Path) -> Path | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"key_file", "enabled"}:
        raise ConfigError("atrest must be an object with key_file and enabled")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("atrest.enabled must be true or false")
    path = _path(base, raw.get("key_file"), "atrest.key_file")
    return path if enabled else None


def parse_cluster_config(raw: Any, base: Path, source: Path | None = None) -> ClusterConfig:
    """Build a ClusterConfig from decoded JSON; paths are resolved against `base`."""
    if not isinstance(raw, dict):
        raise ConfigError("cluster config must be a JSON object")
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise ConfigError("cluster config needs a non-empty 'nodes' list")
    nodes: list[NodeSpec] = []
    for i, n in enumerate(nodes_raw):
        if not isinstance(n, dict):
            raise ConfigError(f"nodes[{i}] must be an object")
        for key in ("id", "raft", "grpc"):
            if not isinstance(n.get(key), str) or not n[key]:
                raise ConfigError(f"nodes[{i}].{key} must be a non-empty string")
        nodes.append(
            NodeSpec(
                id=n["id"],
                raft_address=n["raft"],
                grpc_address=n["grpc"],
                tls_cert=_path(base, n["tls_cert"], f"nodes[{i}].tls_cert") if "tls_cert" in n else None,
                tls_key=_path(base, n["tls_key"], f"nodes[{i}].tls_key") if "tls_key" in n else None,
                metrics_address=_metrics_address(n.get("metrics"), i),
                key_file=_path(base, n["key_file"], f"nodes[{i}].key_file") if "key_file" in n else None,
            )
        )
    for attr in ("id", "raft_address", "grpc_address"):
        values = [getattr(n, attr) for n in nodes]
        if len(set(values)) != len(values):
            raise ConfigError(f"node {attr} values must be unique")
    listening = {a for n in nodes for a in (n.raft_address, n.grpc_address)}
    metrics = [n.metrics_address for n in nodes if n.metrics_address and split_address(n.metrics_address)[1]]
    if len(set(metrics)) != len(metrics) or listening & set(metrics):
        raise ConfigError("node metrics addresses must be unique and differ from every raft and grpc address")
    tls_ca = _path(base, raw["tls_ca"], "tls_ca") if raw.get("tls_ca") is not None else None
    if tls_ca is None and not raw.get("insecure_no_tls", False):
        raise ConfigError(
            "tls_ca is required (set insecure_no_tls: true to run without TLS, never in production)"
        )
    if tls_ca is not None and any(n.tls_cert is None or n.tls_key is None for n in nodes):
        raise ConfigError("with tls_ca set, every node needs tls_cert and tls_key")
    client_auth = raw.get("tls_client_auth", True)
    if not isinstance(client_auth, bool):
        raise ConfigError("tls_client_auth must be true or false")
    if raw.get("tls_revoked_file") is not None:
        revoked_file: Path | None = _path(base, raw["tls_revoked_file"], "tls_revoked_file")
    else:
        revoked_file = tls_ca.parent / REVOKED_FILE_NAME if tls_ca is not None else None
    return ClusterConfig(
        nodes=tuple(nodes),
        raft_password_file=_path(base, raw.get("raft_password_file"), "raft_password_file"),
        tls_ca=tls_ca,
        tls_client_auth=client_auth,
        limits=_section(Limits, raw.get("limits"), "limits"),
        raft=_section(RaftSettings, raw.get("raft"), "raft"),
        server=_section(ServerSettings, raw.get("server"), "server"),
        source=source,
        atrest_key_file=_atrest_key_file(raw.get("atrest"), base),
        tls_revoked_file=revoked_file,
    )


def load_cluster_config(path: Path) -> ClusterConfig:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read cluster config {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"cluster config {path} is not valid JSON: {exc}") from exc
    return parse_cluster_config(raw, path.resolve().parent, source=path.resolve())


def load_node_config(
    path: Path, node_id: str, data_dir: Path | None = None, command_level: int | None = None
) -> NodeConfig:
    """The one place a node reads its configuration."""
    cluster = load_cluster_config(path)
    node = cluster.node(node_id)
    base = path.resolve().parent
    level = SUPPORTED_LEVEL if command_level is None else command_level
    if not 1 <= level <= SUPPORTED_LEVEL:
        raise ConfigError(f"command level must be 1 to {SUPPORTED_LEVEL}, got {level}")
    return NodeConfig(
        cluster=cluster, node=node, data_dir=(data_dir or base / node_id).resolve(), command_level=level
    )


REVOKED_FILE_NAME = "revoked.txt"
# A revocation list is read on every change: bounded so a runaway file cannot stall a node.
REVOKED_MAX_BYTES = 4 * 1024 * 1024
_FINGERPRINT_HEX = 64


def read_revoked(path: Path) -> frozenset[bytes]:
    """The certificate fingerprints (SHA-256 of the DER) in a revocation list; none if absent.

    One hex fingerprint per line (colons allowed, case ignored); `#` starts a comment.
    """
    try:
        with path.open("rb") as f:
            data = f.read(REVOKED_MAX_BYTES + 1)
    except FileNotFoundError:
        return frozenset()
    except OSError as exc:
        raise ConfigError(f"cannot read revocation list {path}: {exc.strerror}") from exc
    if len(data) > REVOKED_MAX_BYTES:
        raise ConfigError(f"revocation list {path} is over {REVOKED_MAX_BYTES} bytes")
    found: set[bytes] = set()
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        text = line.split("#", 1)[0].strip().replace(":", "").lower()
        if not text:
            continue
        if len(text) != _FINGERPRINT_HEX or any(ch not in "0123456789abcdef" for ch in text):
            raise ConfigError(f"{path}:{number}: not a SHA-256 fingerprint (64 hex digits)")
        found.add(bytes.fromhex(text))
    return frozenset(found)


def read_secret(path: Path) -> str:
    """Read a secret file, refusing one that others can read (it guards pickled peer traffic)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigError(f"secret file {path} must not be readable by group or others (chmod 600)")
    if len(text) < 16:
        raise ConfigError(f"secret in {path} is too short (need at least 16 characters)")
    return text

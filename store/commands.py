"""Replicated commands: the versioned msgpack envelope that is the only thing in the log.

Every mutation, read barrier and expiry sweep is ONE command. The proposing node stamps
`now_ms` (wall clock) and any fresh value (a session handle) into it, so applying it is a
pure function of the previous state and the command: replicas that apply the same log end
byte-identical (rqlite does the same, rewriting RANDOM() and now() before logging).

Wire form: a msgpack map {"v": 1, "op": <name>, "now": <ms>, "cid": <bytes|None>,
"seq": <int>, "a": <op arguments>} and, from command level 2, "cep": <client epoch ms>.
`decode` checks every type strictly: an entry that does not decode is a bug or a newer
version, and the node must stop rather than guess.

Command levels make rolling upgrades safe. Each operation (and each envelope field that
changes what apply does) belongs to the level that introduced it; a node understands every
level up to `SUPPORTED_LEVEL`, advertises it through the log (`MemberLevel`), and the leader
proposes something of level N only once every member has advertised N (`store/DESIGN.md`).
An old node therefore never meets an entry it cannot apply.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgpack

COMMAND_VERSION = 1

# Level 1: the operations below up to Barrier, plus MemberLevel (the gate itself).
# Level 2: Configure (replicated limits) and the client epoch ("cep", honest exactly-once).
# Level 3: no new command; a behaviour: the node refuses votes while it hears from a leader,
# which leader leases rely on (store/DESIGN.md, "Leases").
# Level 4: Update may change the session's idle timeout ("idle_timeout_ms").
# Level 5:
# - encryption at rest: Create/Update carry "sealed" (a keyed digest of the plaintext values,
#   the fingerprint's stand-in for ciphertext) and Update "bound_handle" (store/atrest.py).
# - live membership: MemberIdentity records a node's id, Raft and gRPC addresses (store/members.py).
# - EnableEvents: apply starts appending lifecycle events to a replicated ring (store/events.py).
# - session-security operations (store/secops.py): SecurityOn switches on tombstones (no
#   reuse of an ended session's token hash) and rotation grace; SetPrincipalEnabled;
#   ReuseDetected; Rotate with "grace"; Configure of the LATER_LIMITS.
# - packed entries: op "many" carries several commands in one log entry (store/_packing.py).
# - counters from sealed values: Update "rebase" + "read_version" (store/sealing.py, COUNTER_REBASE_LEVEL).
BASE_LEVEL = 1
SUPPORTED_LEVEL = 5
LEASE_LEVEL = 3
IDLE_CHANGE_LEVEL = 4
ATREST_LEVEL = 5
MEMBERSHIP_LEVEL = 5
EVENTS_LEVEL = 5
SECURITY_OPS_LEVEL = 5
# Limits of level 5: a Configure carrying any of them needs level 5 (config.limits_to_wire
# leaves them out while at their defaults).
LATER_LIMITS = frozenset(
    {"max_tombstones", "rotation_grace_ms", "revoke_on_reuse", "max_disabled_principals", "timeout_profile"}
)
MULTI_LEVEL = 5
COUNTER_REBASE_LEVEL = 5

Attributes = tuple[tuple[str, bytes], ...]


class UndecodableEntry(Exception):
    """A log entry this code cannot interpret; applying past it would diverge."""


@dataclass(frozen=True, slots=True)
class Create:
    token_hash: bytes
    handle: str
    principal: str | None
    attributes: Attributes
    idle_timeout_ms: int
    absolute_timeout_ms: int
    # Level 5: the attribute values are sealed (store/atrest.py); this keyed digest of their
    # plaintext stands in for them in the fingerprint (a retry seals with new nonces).
    sealed: bytes | None = None


@dataclass(frozen=True, slots=True)
class Touch:
    token_hash: bytes
    # True when the touch serves a Validate: the reply then carries the attributes.
    with_attributes: bool = False


@dataclass(frozen=True, slots=True)
class Update:
    token_hash: bytes
    set: Attributes
    delete: tuple[str, ...]
    expected_version: int | None
    increment: tuple[tuple[str, int], ...] = ()
    # A new idle timeout for the session (level 4); None leaves it, and is not encoded.
    idle_timeout_ms: int | None = None
    # Level 5: the handle the sealed values are bound to; apply refuses (retryable, not
    # remembered) when the session's handle differs (a proposer that read stale state).
    bound_handle: str | None = None
    sealed: bytes | None = None
    # Level 5: counters whose sealed value the proposer opened, with the integer it held;
    # apply stores that integer in plaintext before the increment, but only while the
    # session is still at `read_version` (else RETRY: nothing applied, nothing remembered).
    # The first increment of a sealed value thereby converts it once (store/sealing.py).
    rebase: tuple[tuple[str, int], ...] = ()
    read_version: int | None = None


@dataclass(frozen=True, slots=True)
class Rotate:
    token_hash: bytes
    new_token_hash: bytes
    principal: str | None  # None keeps the current principal
    # Level 5: the old token serves its successor for rotation_grace_ms (a routine rotation
    # with requests in flight; never with a principal). False is not encoded.
    grace: bool = False


@dataclass(frozen=True, slots=True)
class Delete:
    token_hash: bytes | None
    handle: str | None


@dataclass(frozen=True, slots=True)
class RevokePrincipal:
    principal: str
    except_handle: str | None


@dataclass(frozen=True, slots=True)
class Expire:
    limit: int


@dataclass(frozen=True, slots=True)
class Barrier:
    """A no-op through the log: once applied here, local state is linearizable."""


@dataclass(frozen=True, slots=True)
class Configure:
    """Replace the replicated limits; every field of `Limits`, as a sorted name -> value map."""

    limits: tuple[tuple[str, int | str], ...]
    # A new cluster's seed from the leader's file: applies only if nothing configured the
    # limits yet, so it can never undo an operator's change that committed first.
    seed: bool = False


@dataclass(frozen=True, slots=True)
class EnableEvents:
    """Switch the lifecycle event ring on (or give it new bounds; its cursors continue)."""

    max_count: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class MemberLevel:
    """A node advertises the highest command level it can apply."""

    node_id: str
    level: int


@dataclass(frozen=True, slots=True)
class MemberIdentity:
    """Who a Raft member is (level 5): written by MemberAdd before the Raft change that adds
    the node, dropped (`joined` False) by MemberRemove after the change that removes it."""

    node_id: str
    raft_address: str
    grpc_address: str
    joined: bool


@dataclass(frozen=True, slots=True)
class SecurityOn:
    """Switches on the level-5 rules (store/secops.py) at one log index on every node.

    The leader proposes it once every member advertised level 5; before it, a removal leaves
    no tombstone, exactly as older releases apply the same entries.
    """


@dataclass(frozen=True, slots=True)
class SetPrincipalEnabled:
    """Disable (no new session; its sessions end in this command) or enable a principal."""

    principal: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class ReuseDetected:
    """A read met a rotated-away token after its grace (reads are not log entries)."""

    token_hash: bytes


Op = (
    Create
    | Touch
    | Update
    | Rotate
    | Delete
    | RevokePrincipal
    | Expire
    | Barrier
    | Configure
    | MemberLevel
    | MemberIdentity
    | EnableEvents
    | SecurityOn
    | SetPrincipalEnabled
    | ReuseDetected
)

_NAMES: dict[type[Any], str] = {
    Create: "create",
    Touch: "touch",
    Update: "update",
    Rotate: "rotate",
    Delete: "delete",
    RevokePrincipal: "revoke_principal",
    Expire: "expire",
    Barrier: "barrier",
    Configure: "configure",
    MemberLevel: "member_level",
    MemberIdentity: "member_identity",
    EnableEvents: "enable_events",
    SecurityOn: "security_on",
    SetPrincipalEnabled: "set_principal_enabled",
    ReuseDetected: "reuse_detected",
}

# The command level that introduced each operation; see the module docstring.
LEVELS: dict[type[Any], int] = {op: BASE_LEVEL for op in _NAMES}
LEVELS[Configure] = 2
LEVELS[MemberIdentity] = MEMBERSHIP_LEVEL
LEVELS[EnableEvents] = EVENTS_LEVEL
for _op5 in (SecurityOn, SetPrincipalEnabled, ReuseDetected):
    LEVELS[_op5] = SECURITY_OPS_LEVEL
# The level from which the envelope carries the client epoch.
CLIENT_EPOCH_LEVEL = 2


@dataclass(frozen=True, slots=True)
class Command:
    op: Op
    now_ms: int
    client_id: bytes | None = None
    sequence: int = 0
    # The replicated time at which the client id was born (honest exactly-once, dedup.py);
    # None in level-1 entries, whose retries are deduplicated only while remembered.
    client_epoch_ms: int | None = None


# Fields a proposer fills with fresh values: a retry of the same request carries new ones.
_FRESH_FIELDS: dict[type[Any], frozenset[str]] = {
    Create: frozenset({"handle"}),
    Update: frozenset({"bound_handle", "rebase", "read_version"}),
}
# Fields added after level 1 that are left out of an entry (and its fingerprint) while at
# their default (None, False), so an entry without them is byte-identical to what older
# releases wrote and fingerprint.
_LATER_FIELDS: dict[type[Any], frozenset[str]] = {
    Create: frozenset({"sealed"}),
    Update: frozenset({"idle_timeout_ms", "bound_handle", "sealed", "rebase", "read_version"}),
    Rotate: frozenset({"grace"}),
}
# Sealed values: a retry carries other ciphertext, so the fingerprint takes "sealed" instead.
_SEALED_FIELDS: dict[type[Any], str] = {Create: "attributes", Update: "set"}


def _fields(op: Op) -> list[str]:
    later = _LATER_FIELDS.get(type(op), frozenset())
    fields = op.__dataclass_fields__
    return [n for n in fields if n not in later or getattr(op, n) != fields[n].default]


def fingerprint(op: Op) -> bytes:
    """What makes a request the same request: its operation and arguments, minus fresh values.

    The exactly-once table binds a request id to this (from command level 2), so a request
    id reused for a different request is refused instead of answered with another request's
    reply (store/dedup.py).
    """
    fresh = _FRESH_FIELDS.get(type(op), frozenset())
    if getattr(op, "sealed", None) is not None:
        fresh = fresh | {_SEALED_FIELDS[type(op)]}
    args = [[name, getattr(op, name)] for name in _fields(op) if name not in fresh]
    return hashlib.sha256(msgpack.packb([_NAMES[type(op)], args], use_bin_type=True)).digest()[:16]


def level_of(cmd: Command) -> int:
    """The command level a node must support to apply `cmd`."""
    level = LEVELS[type(cmd.op)]
    if cmd.client_epoch_ms is not None:
        level = max(level, CLIENT_EPOCH_LEVEL)
    if isinstance(cmd.op, Update) and cmd.op.idle_timeout_ms is not None:
        level = max(level, IDLE_CHANGE_LEVEL)
    if isinstance(cmd.op, Rotate) and cmd.op.grace:
        level = max(level, SECURITY_OPS_LEVEL)
    if isinstance(cmd.op, Configure) and any(name in LATER_LIMITS for name, _ in cmd.op.limits):
        level = max(level, SECURITY_OPS_LEVEL)
    if isinstance(cmd.op, Create | Update) and cmd.op.sealed is not None:
        level = max(level, ATREST_LEVEL)
    if isinstance(cmd.op, Update) and cmd.op.bound_handle is not None:
        level = max(level, ATREST_LEVEL)
    if isinstance(cmd.op, Update) and (cmd.op.rebase or cmd.op.read_version is not None):
        level = max(level, COUNTER_REBASE_LEVEL)
    return level


def encode(cmd: Command) -> bytes:
    op = cmd.op
    # Tuples pack as msgpack arrays, so the dataclass fields go out as they are.
    args = {name: getattr(op, name) for name in _fields(op)}
    envelope: dict[str, Any] = {
        "v": COMMAND_VERSION,
        "op": _NAMES[type(op)],
        "now": cmd.now_ms,
        "cid": cmd.client_id,
        "seq": cmd.sequence,
        "a": args,
    }
    if cmd.client_epoch_ms is not None:
        envelope["cep"] = cmd.client_epoch_ms
    return msgpack.packb(envelope, use_bin_type=True)


def _req(
    args: dict[str, Any], key: str, kind: type[Any] | tuple[type[Any], ...], optional: bool = False
) -> Any:
    if key not in args:
        raise UndecodableEntry(f"missing argument {key!r}")
    value = args[key]
    if value is None and optional:
        return None
    if isinstance(value, bool) and kind is int:
        raise UndecodableEntry(f"argument {key!r} has type bool")
    if not isinstance(value, kind):
        raise UndecodableEntry(f"argument {key!r} has type {type(value).__name__}")
    return value


def _attrs(raw: Any, key: str) -> Attributes:
    if not isinstance(raw, list):
        raise UndecodableEntry(f"argument {key!r} must be a list")
    out: list[tuple[str, bytes]] = []
    for pair in raw:
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], bytes)
        ):
            raise UndecodableEntry(f"argument {key!r} holds a malformed pair")
        out.append((pair[0], pair[1]))
    return tuple(out)


def _counter_pairs(raw: Any, key: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(raw, list) or not all(
        isinstance(p, list)
        and len(p) == 2
        and isinstance(p[0], str)
        and isinstance(p[1], int)
        and not isinstance(p[1], bool)
        for p in raw
    ):
        raise UndecodableEntry(f"argument {key!r} must hold [name, int] pairs")
    return tuple((p[0], p[1]) for p in raw)


def _op(name: str, a: dict[str, Any]) -> Op:
    if name == "create":
        return Create(
            token_hash=_req(a, "token_hash", bytes),
            handle=_req(a, "handle", str),
            principal=_req(a, "principal", str, optional=True),
            attributes=_attrs(a.get("attributes"), "attributes"),
            idle_timeout_ms=_req(a, "idle_timeout_ms", int),
            absolute_timeout_ms=_req(a, "absolute_timeout_ms", int),
            sealed=_req(a, "sealed", bytes) if "sealed" in a else None,
        )
    if name == "touch":
        return Touch(
            token_hash=_req(a, "token_hash", bytes), with_attributes=_req(a, "with_attributes", bool)
        )
    if name == "update":
        deletes = _req(a, "delete", list)
        if not all(isinstance(d, str) for d in deletes):
            raise UndecodableEntry("argument 'delete' must hold strings")
        increments = _counter_pairs(a.get("increment", []), "increment")
        rebase = _counter_pairs(a.get("rebase", []), "rebase")
        return Update(
            token_hash=_req(a, "token_hash", bytes),
            set=_attrs(a.get("set"), "set"),
            delete=tuple(deletes),
            expected_version=_req(a, "expected_version", int, optional=True),
            increment=increments,
            idle_timeout_ms=_req(a, "idle_timeout_ms", int) if "idle_timeout_ms" in a else None,
            bound_handle=_req(a, "bound_handle", str) if "bound_handle" in a else None,
            sealed=_req(a, "sealed", bytes) if "sealed" in a else None,
            rebase=rebase,
            read_version=_req(a, "read_version", int) if "read_version" in a else None,
        )
    if name == "rotate":
        return Rotate(
            token_hash=_req(a, "token_hash", bytes),
            new_token_hash=_req(a, "new_token_hash", bytes),
            principal=_req(a, "principal", str, optional=True),
            grace=_req(a, "grace", bool) if "grace" in a else False,
        )
    if name == "delete":
        return Delete(
            token_hash=_req(a, "token_hash", bytes, optional=True),
            handle=_req(a, "handle", str, optional=True),
        )
    if name == "revoke_principal":
        return RevokePrincipal(
            principal=_req(a, "principal", str),
            except_handle=_req(a, "except_handle", str, optional=True),
        )
    if name == "expire":
        return Expire(limit=_req(a, "limit", int))
    if name == "barrier":
        return Barrier()
    if name == "configure":
        pairs = _req(a, "limits", list)
        if not all(
            isinstance(p, list)
            and len(p) == 2
            and isinstance(p[0], str)
            and isinstance(p[1], int | str)
            and not isinstance(p[1], bool)
            for p in pairs
        ):
            raise UndecodableEntry("argument 'limits' must hold [name, int|str] pairs")
        return Configure(limits=tuple((p[0], p[1]) for p in pairs), seed=_req(a, "seed", bool))
    if name == "member_level":
        return MemberLevel(node_id=_req(a, "node_id", str), level=_req(a, "level", int))
    if name == "member_identity":
        return MemberIdentity(
            node_id=_req(a, "node_id", str),
            raft_address=_req(a, "raft_address", str),
            grpc_address=_req(a, "grpc_address", str),
            joined=_req(a, "joined", bool),
        )
    if name == "enable_events":
        return EnableEvents(max_count=_req(a, "max_count", int), max_bytes=_req(a, "max_bytes", int))
    if name == "security_on":
        return SecurityOn()
    if name == "set_principal_enabled":
        return SetPrincipalEnabled(principal=_req(a, "principal", str), enabled=_req(a, "enabled", bool))
    if name == "reuse_detected":
        return ReuseDetected(token_hash=_req(a, "token_hash", bytes))
    raise UndecodableEntry(f"unknown operation {name!r}")


def unpack(entry: bytes) -> Any:
    """An entry's msgpack value, undecoded: a plain command's map, or a packed entry's."""
    try:
        return msgpack.unpackb(entry, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise UndecodableEntry(f"not msgpack: {exc}") from exc


def decode(entry: bytes, supported_level: int = SUPPORTED_LEVEL) -> Command:
    """Decode one entry; anything above `supported_level` is undecodable for this node."""
    return decode_map(unpack(entry), supported_level)


def decode_map(raw: Any, supported_level: int = SUPPORTED_LEVEL) -> Command:
    """Decode one command from its unpacked map (a plain entry, or one inside a packed entry)."""
    if not isinstance(raw, dict):
        raise UndecodableEntry("entry is not a map")
    version = raw.get("v")
    # `type() is int`: True == 1 and 1.0 == 1, and a bool or float is not a version.
    if type(version) is not int or version != COMMAND_VERSION:
        raise UndecodableEntry(f"unsupported command version {version!r}")
    name, args = raw.get("op"), raw.get("a")
    if not isinstance(name, str) or not isinstance(args, dict):
        raise UndecodableEntry("entry lacks an operation")
    now, cid, seq = raw.get("now"), raw.get("cid"), raw.get("seq")
    if not isinstance(now, int) or isinstance(now, bool) or not isinstance(seq, int) or isinstance(seq, bool):
        raise UndecodableEntry("entry has a malformed header")
    if cid is not None and not isinstance(cid, bytes):
        raise UndecodableEntry("entry has a malformed client id")
    epoch = raw.get("cep")
    if epoch is not None and (type(epoch) is not int or epoch < 0):
        raise UndecodableEntry("entry has a malformed client epoch")
    cmd = Command(op=_op(name, args), now_ms=now, client_id=cid, sequence=seq, client_epoch_ms=epoch)
    if level_of(cmd) > supported_level:
        raise UndecodableEntry(
            f"operation {name!r} needs command level {level_of(cmd)}; this node supports {supported_level}"
        )
    return cmd

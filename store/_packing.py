"""Multi-operation log entries: several waiting commands travel and apply as ONE Raft entry.

pysyncobj's cost is per entry, not per byte: the leader pickles, frames, compresses and
encrypts each entry for each follower, and every node journals it and calls its apply
callback once per entry (store/DESIGN.md, "Packed entries"). When the tick thread finds
several proposals waiting, `take_groups` cuts them into runs bounded in count and bytes,
`pack` makes each run of two or more one entry, and `replies_of` fans the list of replies
the packed entry's apply returns back out to the proposers, in order.

The packed entry is the command envelope with op "many" (command level 5, `MULTI_LEVEL`):
{"v": 1, "op": "many", "now": 0, "cid": None, "seq": 0, "a": {"entries": [<map>, ...]}},
where each inner map is an ordinary command exactly as `commands.encode` wrote it. It is
built by concatenating the already-encoded commands behind a fixed msgpack header, so the
leader re-encodes nothing, and one unpack on apply yields every inner command. Apply runs
the inner commands one after another through the same path as a plain entry (same time
rule, same exactly-once table, same replies), so a packed entry leaves a replica in the
state the same commands as separate entries would have.

An old node cannot apply "many" (unknown operation: it stops with exit 70), so the leader
packs only once every member advertised `MULTI_LEVEL`, and a lone proposal stays a plain
entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

from .commands import COMMAND_VERSION, MULTI_LEVEL, UndecodableEntry

OP = "many"

# Bounds for one packed entry. The bytes stay well under 64 KiB: pysyncobj's chunked
# transmission, taken by an entry at least `appendEntriesBatchSizeBytes` long, mislabels its
# last piece (store/DESIGN.md, pysyncobj settings); that bound is 4 MiB today, but a packed
# entry must never be what brings the path back. A single command larger than the bound
# travels alone, as it always did.
MAX_COMMANDS = 128
MAX_BYTES = 32 * 1024
# What apply accepts: a packed entry is only ever written by `pack` under the bounds above;
# anything longer is a bug or a forgery and stops the node like any undecodable entry.
MAX_COMMANDS_APPLIED = 1024

_T = TypeVar("_T")

_packer = msgpack.Packer(use_bin_type=True)
# Everything before the inner commands' array, fixed: the envelope of commands.encode with
# "a" last, so the inner array can be appended without re-encoding anything.
_HEADER = (
    _packer.pack_map_header(6)
    + b"".join(
        _packer.pack(x) for x in ("v", COMMAND_VERSION, "op", OP, "now", 0, "cid", None, "seq", 0, "a")
    )
    + _packer.pack_map_header(1)
    + _packer.pack("entries")
)


@dataclass(frozen=True, slots=True)
class PackLimits:
    max_commands: int = MAX_COMMANDS
    max_bytes: int = MAX_BYTES


def take_groups(items: Sequence[_T], size: Callable[[_T], int], limits: PackLimits) -> list[list[_T]]:
    """Cut waiting proposals into consecutive runs that each fit one packed entry.

    Order is kept (a run never skips an item), so proposals leave in the order they arrived.
    An item that alone exceeds the byte bound forms a run of one: a plain entry.
    """
    groups: list[list[_T]] = []
    current: list[_T] = []
    used = 0
    for item in items:
        n = size(item)
        if current and (len(current) >= limits.max_commands or used + n > limits.max_bytes):
            groups.append(current)
            current, used = [], 0
        current.append(item)
        used += n
    if current:
        groups.append(current)
    return groups


def pack(entries: Sequence[bytes]) -> bytes:
    """One entry carrying `entries` (each an encoded command), applied in this order."""
    if len(entries) < 2:
        raise ValueError("a packed entry carries at least two commands; a lone one stays plain")
    return _HEADER + _packer.pack_array_header(len(entries)) + b"".join(entries)


def inner_commands(raw: dict[str, Any], supported_level: int) -> list[Any]:
    """The inner command maps of an unpacked "many" envelope; raises UndecodableEntry.

    Called by apply with the envelope's op already found to be "many". Each inner map is
    then decoded by `commands.decode_map` exactly as a plain entry would be.
    """
    if supported_level < MULTI_LEVEL:
        raise UndecodableEntry(
            f"operation {OP!r} needs command level {MULTI_LEVEL}; this node supports {supported_level}"
        )
    args = raw.get("a")
    entries = args.get("entries") if isinstance(args, dict) else None
    if not isinstance(entries, list) or not 2 <= len(entries) <= MAX_COMMANDS_APPLIED:
        raise UndecodableEntry("packed entry lacks a list of 2 to 1024 commands")
    for inner in entries:
        if not isinstance(inner, dict) or inner.get("op") == OP:
            raise UndecodableEntry("packed entry holds a malformed or nested command")
    return entries


def replies_of(result: Any, count: int) -> list[Any] | None:
    """The per-proposal replies of a packed entry's apply, or None if it is not one list of `count`."""
    if isinstance(result, list) and len(result) == count:
        return result
    return None

"""A batch of request bodies that are not the message their method expects, for every method.

Shared by the unit canary (the generated deserializers raise for each of them) and the
cluster test (a node answers each with INVALID_ARGUMENT and changes nothing).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from sessionquorum.proto import sessionquorum_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["SessionStore"]
# protobuf's default depth limit is 100; upb refuses deeper nesting, the Python decoder recurses.
NESTING_DEPTH = 200
UNKNOWN_GROUP_FIELD = 15  # no request message has a field 15
_RID = pb.RequestId(client_id=b"c" * 16, sequence=1)
_HASH = bytes(range(32))

# One valid request per method: the truncated form is its bytes minus the last one (which
# always cuts a value short: a varint, a tag without its value, or a length-delimited field).
SAMPLES: dict[str, Message] = {
    "Create": pb.CreateRequest(
        request_id=_RID,
        token_hash=_HASH,
        principal="alice",
        idle_timeout_ms=60_000,
        absolute_timeout_ms=60_000,
    ),
    "Validate": pb.ValidateRequest(token_hash=_HASH),
    "Update": pb.UpdateRequest(request_id=_RID, token_hash=_HASH, set=[pb.Attribute(name=b"a", value=b"v")]),
    "Touch": pb.TouchRequest(request_id=_RID, token_hash=_HASH),
    "Rotate": pb.RotateRequest(request_id=_RID, token_hash=_HASH, new_token_hash=_HASH[::-1]),
    "Delete": pb.DeleteRequest(request_id=_RID, handle="h1"),
    "ListSessions": pb.ListSessionsRequest(principal="alice"),
    "RevokePrincipal": pb.RevokePrincipalRequest(request_id=_RID, principal="alice"),
    "SetPrincipalEnabled": pb.SetPrincipalEnabledRequest(request_id=_RID, principal="alice"),
    "Status": pb.StatusRequest(digest=True),
    "Configure": pb.ConfigureRequest(request_id=_RID, limits_json='{"max_sessions": 10}'),
    "LeaderTransfer": pb.LeaderTransferRequest(to_node_id="n2", timeout_s=1.5),
    "MemberList": pb.MemberListRequest(leader_only=True),
    # Port 0: refused even whole, so no prefix or sample adds a node to a fuzzed cluster.
    "MemberAdd": pb.MemberAddRequest(node_id="n9", raft_address="127.0.0.1:0", grpc_address="127.0.0.1:0"),
    "MemberRemove": pb.MemberRemoveRequest(node_id="n9", timeout_s=1.0),
    "Batch": pb.BatchRequest(
        items=[pb.BatchItem(create=pb.CreateRequest(request_id=_RID, token_hash=_HASH, principal="alice"))]
    ),
    # No field, so no truncated form: every prefix of its bytes is the (empty) message.
    "SnapshotSave": pb.SnapshotSaveRequest(),
    "Events": pb.EventsRequest(after=300),
}


@dataclass(frozen=True, slots=True)
class Malformed:
    method: str  # the RPC's name, e.g. "Create"
    message_name: str  # its request message, e.g. "CreateRequest"
    kind: str
    data: bytes

    @property
    def path(self) -> str:
        return f"/{SERVICE.full_name}/{self.method}"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _bad_utf8_string(message: Message) -> bytes | None:
    """A string field holding invalid UTF-8 (proto3 strings must be valid), if there is one."""
    for f in message.DESCRIPTOR.fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            return _varint(f.number << 3 | 2) + _varint(2) + b"\xc3\x28"
    return None


def nested_groups(depth: int) -> bytes:
    """Unknown groups nested `depth` deep (within protobuf's limit they decode and are kept)."""
    start, end = _varint(UNKNOWN_GROUP_FIELD << 3 | 3), _varint(UNKNOWN_GROUP_FIELD << 3 | 4)
    return start * depth + end * depth


def batch() -> list[Malformed]:
    """Truncated, random bytes, invalid UTF-8 (methods with a string field) and deep nesting."""
    out: list[Malformed] = []
    for method in SERVICE.methods:
        sample = SAMPLES[method.name]
        name = method.input_type.name
        kinds = {
            "truncated": sample.SerializeToString()[:-1] if sample.ByteSize() else None,
            "random": random.Random(method.name).randbytes(48),
            "invalid-utf8": _bad_utf8_string(sample),
            "deep-nesting": nested_groups(NESTING_DEPTH),
        }
        out.extend(
            Malformed(method.name, name, kind, data) for kind, data in kinds.items() if data is not None
        )
    return out

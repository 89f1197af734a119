"""Fuzzing a running cluster: random and truncated protobuf bytes to every RPC, random bytes
and frames to the Raft port. Seeded and bounded; the quick run is part of `make test`, the
long one is marked slow (FUZZ_SCALE times the cases).

After each run: every node is up, the leader and its term are unchanged, the next valid call
is answered correctly, no node logged a traceback or an ERROR, no call was answered INTERNAL
(or UNKNOWN without the sq-epoch trailer of a forgotten request id), and the leader's RSS grew
by less than RSS_BOUND_MIB.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from sessionquorum.client import SessionClient, TLSConfig
from sessionquorum.client._routing import trailers
from sessionquorum.cluster import LocalCluster, TLSFiles
from sessionquorum.cluster._status import client_credentials, secure_channel
from tests.malformed import SAMPLES, SERVICE

pytestmark = pytest.mark.cluster

SEED = 20261203
CASES_PER_METHOD = 8  # of each kind, per method and node (x 4 kinds, 2 nodes; app: a quarter)
FUZZ_SCALE = (
    60  # the slow variant: as many calls as the quick one had at 24 per method x 20  # the slow variant
)
RAFT_CONNECTIONS = 16  # per node (the slow variant: x FUZZ_SCALE)
RAFT_CHUNK_MAX = 8192
HANDSHAKE_MAX_BYTES = 4096  # store/_peerguard.py: a frame before authentication
# What the leader's RSS may grow by over a run. Measured with this file: +1 to +4 MiB for the
# quick run, most of it sessions the mutated Creates made and gRPC's per-call pools.
RSS_BOUND_MIB = 24
CALL_TIMEOUT_S = 10.0
# Configure is not mutated: a mutated body that still decodes could set the cluster's limits
# to anything, and the next valid call would then be refused for a reason that is no bug.
# Nor are MemberAdd / MemberRemove: one byte could turn "n9" into a member's id.
NOT_MUTATED = {"Configure", "MemberAdd", "MemberRemove"}
# LeaderTransfer is not fuzzed: a body that decodes (even an empty one) moves leadership,
# which is its job, and this test checks that leadership did NOT move. Its decoding is
# covered by test_bad_input.py's malformed bodies.
NOT_FUZZED = {"LeaderTransfer"}
# Server-streaming methods: read a few messages, then cancel; a valid Events request waits
# for events that may never come, so its deadline passing is an answer, not a hang.
STREAMING = {m.name for m in SERVICE.methods if m.server_streaming}
STREAM_TIMEOUT_S = 0.3  # a valid Events request waits for events: its deadline is the answer


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _random_fields(rng: random.Random, depth: int = 0) -> bytes:
    """Protobuf-shaped noise: tags of any field and wire type, lengths that may lie."""
    out = bytearray()
    for _ in range(rng.randint(1, 8)):
        field, wire = rng.randint(1, 40), rng.randint(0, 7)
        out += _varint(field << 3 | wire)
        if wire == 0:
            out += _varint(rng.getrandbits(rng.choice((7, 32, 64))))
        elif wire == 1:
            out += rng.randbytes(8)
        elif wire == 2:
            body = (
                _random_fields(rng, depth + 1)
                if depth < 3 and rng.random() < 0.3
                else rng.randbytes(rng.randint(0, 64))
            )
            declared = len(body) if rng.random() < 0.8 else rng.randint(0, 2**31)
            out += _varint(declared) + body
        elif wire == 5:
            out += rng.randbytes(4)
        # wire types 3 and 4 (groups), 6 and 7 (invalid): the tag alone
    return bytes(out)


def _mutated(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if out:
            out[rng.randrange(len(out))] = rng.getrandbits(8)
    return bytes(out)


def grpc_cases(seed: int, per_method: int) -> Iterator[tuple[str, str, bytes]]:
    """(method, kind, body): random bytes, truncated, mutated and protobuf-shaped bodies."""
    rng = random.Random(seed)
    for method in SERVICE.methods:
        if method.name in NOT_FUZZED:
            continue
        valid = SAMPLES[method.name].SerializeToString()
        for _ in range(per_method):
            yield method.name, "random", rng.randbytes(rng.randint(0, 256))
            if valid:  # an empty sample (SnapshotSaveRequest) has no shorter prefix
                yield method.name, "truncated", valid[: rng.randrange(len(valid))]
            yield method.name, "fields", _random_fields(rng)
            if method.name not in NOT_MUTATED:
                yield method.name, "mutated", _mutated(rng, valid)


def raft_cases(seed: int, connections: int) -> Iterator[list[bytes]]:
    """What one connection sends: random bytes, or frames (length prefix + random body)."""
    rng = random.Random(seed)
    for _ in range(connections):
        kind = rng.choice(("bytes", "frame", "frames", "lying-frame"))
        if kind == "bytes":
            yield [rng.randbytes(rng.randint(1, RAFT_CHUNK_MAX))]
        elif kind == "frame":
            body = rng.randbytes(rng.randint(0, HANDSHAKE_MAX_BYTES))
            yield [struct.pack("i", len(body)) + body]
        elif kind == "frames":
            yield [struct.pack("i", n) + rng.randbytes(n) for n in (rng.randint(0, 512) for _ in range(4))]
        else:  # a length that says more (or less, or negative) than follows
            body = rng.randbytes(rng.randint(0, 1024))
            yield [struct.pack("i", rng.randint(-(2**31), 2**31 - 1)) + body]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("fuzz"), 3)
    try:
        cluster.start()
        cluster.wait_for_leader(30.0)
        yield cluster
    finally:
        cluster.stop()
        cluster.close_channels()


def _fuzz_grpc(
    cluster: LocalCluster, node_id: str, files: TLSFiles, cases: Iterator[tuple[str, str, bytes]]
) -> Counter[str]:
    codes: Counter[str] = Counter()
    channel = secure_channel(cluster.grpc_address(node_id), client_credentials(files))
    try:
        for method, kind, body in cases:
            path = f"/{SERVICE.full_name}/{method}"
            try:
                if method in STREAMING:
                    opened: Any = channel.unary_stream(
                        path, request_serializer=None, response_deserializer=None
                    )
                    stream: Any = opened(body, timeout=STREAM_TIMEOUT_S)
                    try:
                        for _ in zip(range(3), stream, strict=False):
                            pass
                    except grpc.RpcError as exc:
                        if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                            raise
                    finally:
                        stream.cancel()
                else:
                    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                        path, request_serializer=None, response_deserializer=None
                    )
                    call(body, timeout=CALL_TIMEOUT_S)
                codes["OK"] += 1
            except grpc.RpcError as exc:
                code = exc.code()
                assert code is not grpc.StatusCode.INTERNAL, (method, kind, body.hex(), exc.details())
                assert code is not grpc.StatusCode.UNKNOWN or "sq-epoch" in trailers(exc), (
                    method,
                    kind,
                    exc.details(),
                )
                assert code is not grpc.StatusCode.DEADLINE_EXCEEDED, (method, kind, body.hex())
                codes[code.name] += 1
    finally:
        channel.close()
    return codes


def _fuzz_raft(cluster: LocalCluster, node_id: str, cases: Iterator[list[bytes]]) -> int:
    host, port = cluster.config.node(node_id).raft_address.rsplit(":", 1)
    closed = 0
    for chunks in cases:
        with socket.create_connection((host, int(port)), timeout=5.0) as sock:
            with contextlib.suppress(OSError):
                for chunk in chunks:
                    sock.sendall(chunk)
            try:
                closed += sock.recv(1) == b""  # the node ends it: a bad frame, or the deadline
            except (ConnectionResetError, TimeoutError):
                closed += 1
    return closed


def _healthy(cluster: LocalCluster, leader: str, term: int) -> None:
    for node_id in cluster.node_ids:
        assert cluster.pid(node_id) is not None, f"{node_id} died"
    assert cluster.wait_for_leader(10.0) == leader
    status = cluster.status(leader)
    assert status is not None and status.term == term
    tls = cluster.tls_files
    with SessionClient(
        list(cluster.endpoints), tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key)
    ) as client:
        created = client.create(principal="after-fuzz", attributes={"k": b"v"})
        assert dict(client.validate(created.token).attributes) == {"k": b"v"}
    for node_id in cluster.node_ids:
        text = cluster.log_path(node_id).read_text(errors="replace")
        assert "Traceback" not in text and " ERROR " not in text, (node_id, cluster.log_tail(node_id))


def _run(cluster: LocalCluster, scale: int, seed: int) -> None:
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    status = cluster.status(leader)
    assert status is not None
    pid = cluster.pid(leader)
    assert pid is not None
    before = _rss_kib(pid)
    started = time.monotonic()
    codes: Counter[str] = Counter()
    # Admin reaches every decoder and handler; app the role check first (some methods only).
    for node_id in (leader, follower):
        codes += _fuzz_grpc(
            cluster, node_id, cluster.admin_tls_files, grpc_cases(seed, CASES_PER_METHOD * scale)
        )
    codes += _fuzz_grpc(
        cluster, leader, cluster.tls_files, grpc_cases(seed + 1, max(1, CASES_PER_METHOD * scale // 4))
    )
    closed = sum(
        _fuzz_raft(cluster, n, raft_cases(seed + 2 + i, RAFT_CONNECTIONS * scale))
        for i, n in enumerate((leader, follower))
    )
    grown_mib = (_rss_kib(pid) - before) / 1024
    print(
        f"fuzz x{scale}: {sum(codes.values())} gRPC calls {dict(codes)}; "
        f"{closed} of {2 * RAFT_CONNECTIONS * scale} Raft connections closed by the node; "
        f"leader RSS +{grown_mib:.1f} MiB over {before / 1024:.1f}; {time.monotonic() - started:.1f} s"
    )
    assert codes["INVALID_ARGUMENT"] > 0 and codes["PERMISSION_DENIED"] > 0
    assert closed == 2 * RAFT_CONNECTIONS * scale
    _healthy(cluster, leader, status.term)
    assert grown_mib < RSS_BOUND_MIB * (1 if scale == 1 else 2), f"leader RSS grew by {grown_mib:.1f} MiB"


def test_fuzzed_grpc_bodies_and_raft_port_bytes_leave_the_cluster_up_leading_and_answering(
    module_cluster: LocalCluster,
) -> None:
    _run(module_cluster, 1, SEED)


@pytest.mark.slow
def test_fuzzing_twenty_times_longer_leaves_the_cluster_up_leading_and_answering(
    module_cluster: LocalCluster,
) -> None:
    _run(module_cluster, FUZZ_SCALE, SEED + 1000)


def test_fuzz_cases_are_seeded_and_cover_every_method() -> None:
    first: Callable[[], list[tuple[str, str, bytes]]] = lambda: list(grpc_cases(SEED, 2))  # noqa: E731
    assert first() == first()
    assert {m for m, _, _ in first()} == {m.name for m in SERVICE.methods} - NOT_FUZZED
    assert list(raft_cases(SEED, 5)) == list(raft_cases(SEED, 5))

"""Bad input gets the exact gRPC status and a message naming the problem; nothing changes.

The calls go through raw stubs (not the client library) so that malformed requests the
client would refuse locally still reach a node; requests that do not even decode are sent
as raw bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import grpc
import pytest

from sessionquorum.cluster import LocalCluster
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc
from sessionquorum.store.validation import MIN_IDLE_TIMEOUT_MS as MIN_IDLE_MS
from tests.malformed import Malformed, batch

from .helpers import pb, stub, wait_converged

pytestmark = pytest.mark.cluster

LIMITS = {
    "max_principal_bytes": 16,
    "max_attribute_name_bytes": 8,
    "max_attribute_value_bytes": 64,
    "max_attributes_per_session": 3,
    "max_session_bytes": 150,
    "max_sessions_per_principal": 2,
    "principal_cap_policy": "reject",
}
MAX_MESSAGE = 128 * 1024
# No expiry sweeps: an expired session must still be there to be reported as expired.
SERVER = {"max_message_bytes": MAX_MESSAGE, "sweep_interval_s": 3600.0}


class Api:
    """A raw stub on the leader that numbers request ids for us."""

    def __init__(self, stub: pb_grpc.SessionStoreStub) -> None:
        self.stub = stub
        self.client_id = os.urandom(16)
        self.seq = 0

    def rid(self) -> pb.RequestId:
        self.seq += 1
        return pb.RequestId(client_id=self.client_id, sequence=self.seq)

    def create(self, token: bytes, **kw: object) -> pb.CreateResponse:
        kw.setdefault("idle_timeout_ms", 60_000)
        kw.setdefault("absolute_timeout_ms", 120_000)
        return self.stub.Create(
            pb.CreateRequest(request_id=self.rid(), token_hash=h(token), **kw), timeout=10
        )

    def validate(self, token: bytes) -> pb.Session:
        return self.stub.Validate(pb.ValidateRequest(token_hash=h(token)), timeout=10).session


def h(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def attr(name: bytes | str, value: bytes) -> pb.Attribute:
    return pb.Attribute(name=name.encode() if isinstance(name, str) else name, value=value)


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # Encryption at rest off: these limits are exact byte counts of what clients send; with
    # it on, each value counts atrest.OVERHEAD_BYTES more (tests/integration/test_atrest.py).
    overrides = {"limits": LIMITS, "server": SERVER, "atrest": {"enabled": False}}
    cluster = LocalCluster(tmp_path_factory.mktemp("bad-input"), 3, overrides=overrides)
    try:
        cluster.start()
        cluster.wait_for_leader(30.0)
        yield cluster
    finally:
        cluster.stop()
        cluster.close_channels()


@pytest.fixture
def api(module_cluster: LocalCluster) -> Iterator[Api]:
    s, channel = stub(module_cluster, module_cluster.wait_for_leader())
    yield Api(s)
    channel.close()


def expect(code: grpc.StatusCode, fragment: str, call: object) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    assert info.value.code() == code, info.value.details()
    assert fragment in info.value.details(), info.value.details()


@pytest.fixture
def existing(api: Api) -> bytes:
    token = os.urandom(16)
    api.create(token, principal="p-" + token.hex()[:8], attributes=[attr("a", b"x" * 10)])
    return token


def assert_unchanged(api: Api, token: bytes, version: int = 1) -> None:
    s = api.validate(token)
    assert s.version == version
    assert [(a.name, a.value) for a in s.attributes] == [(b"a", b"x" * 10)]


INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
ABORTED, EXHAUSTED = grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("length", [0, 31, 33])
def test_wrong_length_token_hash_is_invalid_argument(api: Api, existing: bytes, length: int) -> None:
    bad = b"\x01" * length
    expect(
        INVALID,
        f"32-byte SHA-256 of the token, got {length} bytes",
        lambda: api.stub.Validate(pb.ValidateRequest(token_hash=bad), timeout=10),
    )
    expect(
        INVALID,
        "token_hash",
        lambda: api.stub.Update(
            pb.UpdateRequest(request_id=api.rid(), token_hash=bad, set=[attr("a", b"y")]), timeout=10
        ),
    )
    assert_unchanged(api, existing)


def test_unknown_session_is_not_found(api: Api) -> None:
    expect(NOT_FOUND, "session not found", lambda: api.validate(b"never-issued"))
    expect(
        NOT_FOUND,
        "session not found",
        lambda: api.stub.Update(
            pb.UpdateRequest(request_id=api.rid(), token_hash=h(b"never-issued"), set=[attr("a", b"y")]),
            timeout=10,
        ),
    )


def test_expired_session_is_not_found_with_reason_and_cannot_be_updated(
    api: Api, module_cluster: LocalCluster
) -> None:
    token = os.urandom(16)
    api.create(token, idle_timeout_ms=MIN_IDLE_MS, absolute_timeout_ms=MIN_IDLE_MS)

    def expired() -> str | None:
        try:
            api.validate(token)
        except grpc.RpcError as exc:
            return exc.details() if exc.code() == NOT_FOUND else None
        return None

    assert "session expired" in module_cluster.wait_until(expired, 10.0, "the session to expire")
    expect(
        NOT_FOUND,
        "session expired",
        lambda: api.stub.Touch(pb.TouchRequest(request_id=api.rid(), token_hash=h(token)), timeout=10),
    )
    expect(NOT_FOUND, "not found", lambda: api.validate(token))  # removed by the refused touch


def test_update_with_wrong_expected_version_is_aborted_and_changes_nothing(api: Api, existing: bytes) -> None:
    expect(
        ABORTED,
        "expected version 7, the session is at version 1",
        lambda: api.stub.Update(
            pb.UpdateRequest(
                request_id=api.rid(), token_hash=h(existing), set=[attr("a", b"y")], expected_version=7
            ),
            timeout=10,
        ),
    )
    assert_unchanged(api, existing)


@pytest.mark.parametrize(
    ("idle", "absolute", "fragment"),
    [
        (0, 1000, "idle_timeout_ms must be > 0"),
        (-5, 1000, "idle_timeout_ms must be > 0"),
        (1000, 0, "absolute_timeout_ms must be > 0"),
        (1000, -1, "absolute_timeout_ms must be > 0"),
        (5000, 4999, "must not be shorter than idle_timeout_ms"),
        (1, 1, f"idle_timeout_ms must be >= {MIN_IDLE_MS}, got 1"),
        (MIN_IDLE_MS - 1, 60_000, f"idle_timeout_ms must be >= {MIN_IDLE_MS}, got {MIN_IDLE_MS - 1}"),
    ],
)
def test_bad_timeouts_are_invalid_argument(api: Api, idle: int, absolute: int, fragment: str) -> None:
    token = os.urandom(16)
    expect(INVALID, fragment, lambda: api.create(token, idle_timeout_ms=idle, absolute_timeout_ms=absolute))
    expect(NOT_FOUND, "not found", lambda: api.validate(token))


def test_each_size_limit_exceeded_by_one_is_resource_exhausted(api: Api, existing: bytes) -> None:
    def create(**kw: object) -> object:
        return lambda: api.create(os.urandom(16), **kw)

    def update(*attrs: pb.Attribute) -> object:
        return lambda: api.stub.Update(
            pb.UpdateRequest(request_id=api.rid(), token_hash=h(existing), set=list(attrs)), timeout=10
        )

    # At the limit: accepted.
    api.create(os.urandom(16), principal="p" * 16, attributes=[attr("n" * 8, b"v" * 64)])
    api.create(os.urandom(16), attributes=[attr("b", b"v" * 64), attr("c", b"v" * 64), attr("a", b"x" * 19)])
    # One over: refused, naming the limit.
    expect(EXHAUSTED, "principal is 17 bytes, the limit is 16", create(principal="p" * 17))
    expect(EXHAUSTED, "is 9 bytes, the limit is 8", create(attributes=[attr("n" * 9, b"v")]))
    expect(EXHAUSTED, "value is 65 bytes, the limit is 64", create(attributes=[attr("n", b"v" * 65)]))
    expect(
        EXHAUSTED,
        "has 4 attributes, the limit is 3",
        create(attributes=[attr(f"n{i}", b"v") for i in range(4)]),
    )
    expect(EXHAUSTED, "leaves 4 attributes, the limit is 3", update(*(attr(f"m{i}", b"v") for i in range(3))))
    expect(
        EXHAUSTED,
        "total 151 bytes, the limit is 150",
        update(attr("b", b"v" * 64), attr("c", b"v" * 64), attr("a", b"x" * 20)),
    )
    assert_unchanged(api, existing)
    capped = "capped-" + os.urandom(4).hex()
    api.create(os.urandom(16), principal=capped)
    api.create(os.urandom(16), principal=capped)
    expect(EXHAUSTED, "principal already has 2 sessions, the limit is 2", create(principal=capped))


def test_non_utf8_attribute_name_is_invalid_argument(api: Api, existing: bytes) -> None:
    token = os.urandom(16)
    expect(
        INVALID,
        "attributes[0] name is not valid UTF-8",
        lambda: api.create(token, attributes=[attr(b"\xff\xfe", b"v")]),
    )
    expect(
        INVALID,
        "set[1] name is not valid UTF-8",
        lambda: api.stub.Update(
            pb.UpdateRequest(
                request_id=api.rid(), token_hash=h(existing), set=[attr("ok", b"v"), attr(b"\xc3\x28", b"v")]
            ),
            timeout=10,
        ),
    )
    expect(NOT_FOUND, "not found", lambda: api.validate(token))
    assert_unchanged(api, existing)


def test_request_larger_than_max_message_size_is_resource_exhausted(api: Api, existing: bytes) -> None:
    expect(
        EXHAUSTED,
        "larger than max",
        lambda: api.stub.Update(
            pb.UpdateRequest(
                request_id=api.rid(), token_hash=h(existing), set=[attr("a", b"z" * (MAX_MESSAGE + 1))]
            ),
            timeout=10,
        ),
    )
    assert_unchanged(api, existing)


def test_mutation_without_request_id_is_invalid_argument(api: Api) -> None:
    expect(
        INVALID,
        "request_id is required",
        lambda: api.stub.Create(
            pb.CreateRequest(token_hash=h(b"no-rid"), idle_timeout_ms=1000, absolute_timeout_ms=1000),
            timeout=10,
        ),
    )


def test_retry_with_same_request_id_returns_first_answer_without_applying_twice(api: Api) -> None:
    token = os.urandom(16)
    api.create(token)
    rid = api.rid()
    request = pb.UpdateRequest(request_id=rid, token_hash=h(token), set=[attr("a", b"1")])
    first = api.stub.Update(request, timeout=10)
    again = api.stub.Update(request, timeout=10)
    assert first == again
    assert api.validate(token).version == 2


def test_increment_of_a_non_integer_attribute_is_invalid_argument(api: Api, existing: bytes) -> None:
    expect(
        INVALID,
        "'a' does not hold a decimal integer",
        lambda: api.stub.Update(
            pb.UpdateRequest(
                request_id=api.rid(), token_hash=h(existing), increment=[pb.Increment(name=b"a", delta=1)]
            ),
            timeout=10,
        ),
    )
    assert_unchanged(api, existing)


@pytest.mark.parametrize("byte", [0x00, 0xFF])
def test_token_hash_of_one_repeated_byte_is_invalid_argument(api: Api, existing: bytes, byte: int) -> None:
    degenerate = bytes([byte]) * 32
    fragment = f"is one byte value (0x{byte:02x}) repeated"
    expect(
        INVALID,
        f"token_hash {fragment}",
        lambda: api.stub.Create(
            pb.CreateRequest(
                request_id=api.rid(),
                token_hash=degenerate,
                idle_timeout_ms=60_000,
                absolute_timeout_ms=60_000,
            ),
            timeout=10,
        ),
    )
    expect(
        INVALID,
        f"new_token_hash {fragment}",
        lambda: api.stub.Rotate(
            pb.RotateRequest(request_id=api.rid(), token_hash=h(existing), new_token_hash=degenerate),
            timeout=10,
        ),
    )
    expect(
        INVALID, fragment, lambda: api.stub.Validate(pb.ValidateRequest(token_hash=degenerate), timeout=10)
    )
    assert_unchanged(api, existing)


REFUSAL_LINE = (
    " INFO sessionquorum.store.service: refused a request: INVALID_ARGUMENT: request is not a valid "
)


def _fingerprint(status: pb.StatusResponse) -> tuple[object, ...]:
    """What a log entry would change: the state, the applied and committed index, the journal."""
    return (
        status.state_digest,
        status.last_applied,
        status.commit_index,
        status.journal_bytes,
        status.journal_entries,
    )


def _send_raw(channel: grpc.Channel, case: Malformed) -> grpc.RpcError:
    call = channel.unary_unary(case.path, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        call(case.data, timeout=10)
    return info.value


def test_undecodable_requests_to_every_method_are_invalid_argument_with_one_log_line_and_change_nothing(
    module_cluster: LocalCluster,
) -> None:
    """Truncated, random, invalid UTF-8 and too deeply nested bodies, to every method of every node.

    Before: UNKNOWN (the client retries it as an unknown outcome) and a 7-line traceback per
    request (the generated deserializer raised inside gRPC; test_decoding.py's canary).
    """
    cases = batch()
    assert len(cases) == 63
    wait_converged(module_cluster)
    before = module_cluster.statuses(digest=True)
    log_sizes = {n: module_cluster.log_path(n).stat().st_size for n in module_cluster.node_ids}
    for node_id in module_cluster.node_ids:
        channel = module_cluster.channel(node_id)
        try:
            for case in cases:
                error = _send_raw(channel, case)
                assert error.code() == INVALID, (node_id, case, error.code(), error.details())
                details = error.details() or ""
                prefix = f"request is not a valid {case.message_name}: "
                assert details.startswith(prefix) and len(details) > len(prefix), (node_id, case, details)
                assert ("UTF-8" in details) == (case.kind == "invalid-utf8"), (node_id, case, details)
                assert ("sq-node", node_id) in tuple(error.trailing_metadata() or ()), (node_id, case)
        finally:
            channel.close()
    after = module_cluster.statuses(digest=True)
    for node_id in module_cluster.node_ids:
        was, now = before[node_id], after[node_id]
        assert was is not None and now is not None
        assert _fingerprint(now) == _fingerprint(was), node_id
        with module_cluster.log_path(node_id).open("rb") as f:
            f.seek(log_sizes[node_id])
            new_lines = f.read().decode(errors="replace").splitlines()
        refusals = [line for line in new_lines if REFUSAL_LINE in line]
        assert len(refusals) == len(cases), (node_id, new_lines[:10])
        assert not [line for line in new_lines if "Traceback" in line or " ERROR " in line], node_id
        # Nothing else came from serving them: every other new line is a periodic one.
        others = [line for line in new_lines if REFUSAL_LINE not in line]
        assert all("sessionquorum.store.service" not in line and "grpc" not in line for line in others), (
            others
        )

"""The client against real in-process gRPC servers whose servicers are small scripted fakes.

Each fake node answers every method through one script `(method, request, context)`, and
records what it received, so tests can assert what went over the wire (request ids,
hashes) and how often. Servers bind 127.0.0.1:0; nothing sleeps blindly: a node that must
"hang" waits for its own call to be cancelled by the client's attempt deadline.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import grpc
import pytest

from sessionquorum.client import (
    NotFound,
    OutcomeUnknown,
    PermissionDenied,
    SessionClient,
    Unavailable,
    VersionConflict,
    hash_token,
)
from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

Script = Callable[[str, Any, grpc.ServicerContext], Any]
StartNode = Callable[[Script], "tuple[str, FakeNode]"]
MakeClient = Callable[..., SessionClient]
FAST = {"timeout_s": 2.0, "attempt_timeout_s": 0.5}


class FakeNode(pb_grpc.SessionStoreServicer):
    """Answers every method through `script`; records (method, request) in arrival order."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def requests(self, method: str) -> list[Any]:
        with self._lock:
            return [request for name, request in self.calls if name == method]

    def _handle(self, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self.calls.append((method, request))
        return self.script(method, request, context)

    def Create(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._handle("Create", request, context)

    def Validate(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._handle("Validate", request, context)

    def Update(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._handle("Update", request, context)

    def Touch(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._handle("Touch", request, context)

    def Rotate(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._handle("Rotate", request, context)

    def Delete(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._handle("Delete", request, context)

    def ListSessions(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._handle("ListSessions", request, context)

    def RevokePrincipal(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._handle("RevokePrincipal", request, context)

    def SetPrincipalEnabled(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._handle("SetPrincipalEnabled", request, context)

    def Status(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._handle("Status", request, context)


SESSION = pb.Session(handle="h1", principal="alice", created_ms=10, last_access_ms=20, version=3)


def ok(method: str, request: Any) -> Any:
    """A plausible success answer for each method."""
    if method == "Create":
        return pb.CreateResponse(session=SESSION, evicted_handles=["old"])
    if method == "Validate":
        session = pb.Session()
        session.CopyFrom(SESSION)
        session.attributes.add(name=b"cart", value=b"[1]")
        return pb.ValidateResponse(session=session)
    if method == "Rotate":
        return pb.RotateResponse(session=SESSION)
    if method == "Delete":
        return pb.DeleteResponse(existed=True)
    if method == "ListSessions":
        return pb.ListSessionsResponse(sessions=[SESSION, pb.Session(handle="h2")])
    if method == "RevokePrincipal":
        return pb.RevokePrincipalResponse(revoked_handles=["h1", "h2"])
    if method == "SetPrincipalEnabled":
        return pb.SetPrincipalEnabledResponse(ended_handles=["h1"] if not request.enabled else [])
    return getattr(pb, f"{method}Response")(session=SESSION)


def fail(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    details: str,
    *,
    node: str | None = "n1",
    leader: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> NoReturn:
    """End the call as a node does: status, message, and the sq-node / sq-leader trailers."""
    metadata: list[tuple[str, str]] = []
    if node is not None:
        metadata.append(("sq-node", node))
    if leader is not None:
        metadata.append(("sq-leader", leader))
    metadata.extend(extra)
    context.set_trailing_metadata(tuple(metadata))
    context.abort(code, details)


def refuse_as_forgotten(context: grpc.ServicerContext, epoch_ms: int) -> NoReturn:
    """The node's answer when a client id's exactly-once entry may have been forgotten."""
    fail(
        context,
        grpc.StatusCode.UNKNOWN,
        "outcome unknown (deduplication state expired): this request was not applied, and whether "
        "an earlier attempt with this request id was applied is unknown",
        extra=(("sq-epoch", str(epoch_ms)),),
    )


def leader_script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
    return ok(method, request)


def failing_n_times(n: int, code: grpc.StatusCode) -> Script:
    remaining = [n]
    lock = threading.Lock()

    def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        with lock:
            remaining[0] -= 1
            failing = remaining[0] >= 0
        if failing:
            fail(context, code, f"scripted {code.name}")
        return ok(method, request)

    return script


def hang_until_cancelled(context: grpc.ServicerContext) -> None:
    # The client's attempt deadline ends the call; the callback fires then. The bound only
    # keeps a broken test from hanging the worker forever.
    done = threading.Event()
    context.add_callback(done.set)
    done.wait(10.0)


@pytest.fixture
def start_node() -> Iterator[StartNode]:
    stops: list[tuple[grpc.Server, ThreadPoolExecutor]] = []

    def start(script: Script) -> tuple[str, FakeNode]:
        node = FakeNode(script)
        executor = ThreadPoolExecutor(max_workers=8)
        server = grpc.server(executor)
        pb_grpc.add_SessionStoreServicer_to_server(node, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        stops.append((server, executor))
        return f"127.0.0.1:{port}", node

    yield start
    for server, executor in stops:
        server.stop(grace=None).wait()
        executor.shutdown(wait=True)


@pytest.fixture
def make_client(start_node: StartNode) -> Iterator[MakeClient]:
    # Depends on start_node so that clients close before the servers stop.
    clients: list[SessionClient] = []

    def make(endpoints: list[str], **kwargs: Any) -> SessionClient:
        client = SessionClient(endpoints, insecure=True, **{**FAST, **kwargs})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def dead_endpoint() -> Iterator[str]:
    # Bound but never listening: connections are refused, and no one else gets the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


# -- routing ------------------------------------------------------------------------------


def test_follower_redirects_with_leader_hint_and_client_stays_at_leader(
    start_node: StartNode, make_client: MakeClient
) -> None:
    leader_address, leader = start_node(leader_script)
    follower_address, follower = start_node(
        lambda method, request, context: fail(
            context, grpc.StatusCode.FAILED_PRECONDITION, "not the leader", node="n2", leader=leader_address
        )
    )
    client = make_client([follower_address])

    client.create()
    client.touch("t")

    assert client.endpoints == (follower_address, leader_address)
    assert len(follower.calls) == 1
    assert [name for name, _ in leader.calls] == ["Create", "Touch"]


def test_follower_without_hint_sends_client_to_next_endpoint(
    start_node: StartNode, make_client: MakeClient
) -> None:
    follower_address, follower = start_node(
        lambda method, request, context: fail(
            context, grpc.StatusCode.FAILED_PRECONDITION, "no hint", leader=""
        )
    )
    leader_address, leader = start_node(leader_script)
    client = make_client([follower_address, leader_address])

    assert client.delete("t") is True
    assert len(follower.calls) == 1
    assert len(leader.calls) == 1


def test_dead_endpoint_first_in_list_is_skipped(
    start_node: StartNode, make_client: MakeClient, dead_endpoint: str
) -> None:
    leader_address, leader = start_node(leader_script)
    client = make_client([dead_endpoint, leader_address])

    assert client.validate("t").handle == "h1"
    client.update("t", set={"k": b"v"})

    assert [name for name, _ in leader.calls] == ["Validate", "Update"]


def test_read_against_unreachable_cluster_raises_unavailable(
    make_client: MakeClient, dead_endpoint: str
) -> None:
    client = make_client([dead_endpoint], timeout_s=0.3)
    with pytest.raises(Unavailable, match="Connection refused"):
        client.validate("t")


def test_mutation_against_unreachable_cluster_reports_outcome_unknown(
    make_client: MakeClient, dead_endpoint: str
) -> None:
    # gRPC's UNAVAILABLE cannot tell "refused" from "connection lost after sending", so the
    # client must not promise that nothing was applied.
    client = make_client([dead_endpoint], timeout_s=0.3)
    with pytest.raises(OutcomeUnknown):
        client.delete("t")


# -- exactly-once retries --------------------------------------------------------------------


def test_mutation_retry_reuses_request_id_after_unknown_outcome(
    start_node: StartNode, make_client: MakeClient
) -> None:
    address, node = start_node(failing_n_times(1, grpc.StatusCode.UNKNOWN))
    client = make_client([address])

    created = client.create(principal="alice")
    client.touch(created.token)

    first, retry = node.requests("Create")
    assert first.request_id == retry.request_id
    assert first.SerializeToString(deterministic=True) == retry.SerializeToString(deterministic=True)
    (touch,) = node.requests("Touch")
    assert touch.request_id.client_id == first.request_id.client_id
    assert touch.request_id.sequence == first.request_id.sequence + 1


def test_mutation_retry_after_attempt_timeout_reuses_request_id(
    start_node: StartNode, make_client: MakeClient
) -> None:
    hung = threading.Event()

    def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        if not hung.is_set():
            hung.set()
            hang_until_cancelled(context)
        return ok(method, request)

    address, node = start_node(script)
    client = make_client([address], attempt_timeout_s=0.2)

    client.rotate("old-token")

    first, retry = node.requests("Rotate")
    assert first.request_id == retry.request_id
    assert first.new_token_hash == retry.new_token_hash


def test_mutation_always_unknown_raises_outcome_unknown_at_deadline(
    start_node: StartNode, make_client: MakeClient
) -> None:
    address, node = start_node(failing_n_times(10**6, grpc.StatusCode.UNKNOWN))
    client = make_client([address], timeout_s=0.3)

    with pytest.raises(OutcomeUnknown, match="may have been applied") as info:
        client.update("t", set={"k": b"v"})
    client_ids_before = {r.request_id.client_id for r in node.requests("Update")}
    with pytest.raises(OutcomeUnknown):
        client.update("t", set={"k": b"v"})

    assert isinstance(info.value.__cause__, grpc.RpcError)
    assert info.value.__cause__.details() == "scripted UNKNOWN"
    assert info.value.code is grpc.StatusCode.UNKNOWN
    first_call = [r for r in node.requests("Update") if r.request_id.client_id in client_ids_before]
    assert len(first_call) >= 2
    assert {(r.request_id.client_id, r.request_id.sequence) for r in first_call} == {
        (first_call[0].request_id.client_id, 1)
    }
    # The unsettled client id is retired: the next call must not share it.
    assert len({r.request_id.client_id for r in node.requests("Update")}) == 2


def test_mutation_always_unavailable_from_node_raises_unavailable(
    start_node: StartNode, make_client: MakeClient
) -> None:
    address, node = start_node(failing_n_times(10**6, grpc.StatusCode.UNAVAILABLE))
    client = make_client([address], timeout_s=0.3)

    with pytest.raises(Unavailable, match="scripted UNAVAILABLE"):
        client.create()

    assert len(node.requests("Create")) >= 2
    assert len({r.request_id.SerializeToString() for r in node.requests("Create")}) == 1


def test_followers_pointing_at_each_other_back_off_and_raise_unavailable(
    start_node: StartNode, make_client: MakeClient
) -> None:
    # During an election two nodes can name each other; the client must not spin.
    addresses: dict[str, str] = {}

    def pointing_at(other: str) -> Script:
        def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
            fail(context, grpc.StatusCode.FAILED_PRECONDITION, "not the leader", leader=addresses[other])

        return script

    addresses["a"], node_a = start_node(pointing_at("b"))
    addresses["b"], node_b = start_node(pointing_at("a"))
    client = make_client([addresses["a"]], timeout_s=0.3)

    with pytest.raises(Unavailable, match="not the leader"):
        client.create()

    total = len(node_a.calls) + len(node_b.calls)
    assert 4 <= total < 60


def test_close_during_retries_ends_mutation_with_outcome_unknown(
    start_node: StartNode, make_client: MakeClient
) -> None:
    reached = threading.Event()

    def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        reached.set()
        fail(context, grpc.StatusCode.UNKNOWN, "commit timed out")

    address, _ = start_node(script)
    client = make_client([address], timeout_s=60.0)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            client.touch("t")
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=run)
    caller.start()
    assert reached.wait(5.0)
    client.close()
    caller.join(5.0)

    assert not caller.is_alive()
    (error,) = outcome
    assert isinstance(error, OutcomeUnknown)
    assert "closed" in error.message


def test_not_found_is_raised_without_retry(start_node: StartNode, make_client: MakeClient) -> None:
    address, node = start_node(
        lambda method, request, context: fail(context, grpc.StatusCode.NOT_FOUND, "no session h9")
    )
    client = make_client([address])

    with pytest.raises(NotFound, match="no session h9"):
        client.touch("t")
    assert len(node.calls) == 1


def test_version_conflict_is_raised_without_retry(start_node: StartNode, make_client: MakeClient) -> None:
    address, node = start_node(
        lambda method, request, context: fail(context, grpc.StatusCode.ABORTED, "at version 4")
    )
    client = make_client([address])

    with pytest.raises(VersionConflict, match="at version 4"):
        client.update("t", set={"k": b"v"}, expected_version=3)
    assert len(node.calls) == 1


def test_concurrent_mutations_use_different_client_ids(
    start_node: StartNode, make_client: MakeClient
) -> None:
    both_arrived = threading.Barrier(2, timeout=5.0)

    def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        both_arrived.wait()  # both calls are in flight at once
        return ok(method, request)

    address, node = start_node(script)
    client = make_client([address])

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: client.create(), range(2)))

    assert results[0].token != results[1].token
    first, second = node.requests("Create")
    assert first.request_id.client_id != second.request_id.client_id


def test_per_call_timeout_overrides_client_default(start_node: StartNode, make_client: MakeClient) -> None:
    address, _ = start_node(failing_n_times(10**6, grpc.StatusCode.UNAVAILABLE))
    client = make_client([address], timeout_s=60.0)

    with pytest.raises(Unavailable, match=r"within 0\.2 s"):
        client.list_sessions("alice", timeout_s=0.2)


def test_tokens_never_reach_logs_even_on_retries(
    start_node: StartNode, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    address, _ = start_node(failing_n_times(2, grpc.StatusCode.UNKNOWN))
    client = make_client([address])

    with caplog.at_level(logging.DEBUG, logger="sessionquorum.client"):
        created = client.create()
        rotated = client.rotate(created.token)
        client.delete(rotated.token)

    assert any("attempt" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        assert created.token not in record.getMessage()
        assert rotated.token not in record.getMessage()


# -- what goes over the wire -----------------------------------------------------------------


def test_create_sends_only_the_token_hash(start_node: StartNode, make_client: MakeClient) -> None:
    address, node = start_node(leader_script)
    client = make_client([address])

    created = client.create(attributes={"cart": b"[]"}, idle_timeout_s=1800, absolute_timeout_s=8 * 3600)

    (request,) = node.requests("Create")
    assert request.token_hash == hash_token(created.token)
    assert created.token.encode() not in request.SerializeToString()
    assert request.principal == ""
    assert [(a.name, a.value) for a in request.attributes] == [(b"cart", b"[]")]
    assert (request.idle_timeout_ms, request.absolute_timeout_ms) == (1_800_000, 28_800_000)
    assert (request.request_id.sequence, len(request.request_id.client_id)) == (1, 16)
    assert created.session.principal == "alice"
    assert created.evicted_handles == ("old",)


def test_rotate_sends_old_and_new_hashes_and_returns_new_token(
    start_node: StartNode, make_client: MakeClient
) -> None:
    address, node = start_node(leader_script)
    client = make_client([address])

    rotated = client.rotate("old-token", principal="alice")
    client.rotate("old-token")
    client.rotate("old-token", grace=True)

    bound, kept, graced = node.requests("Rotate")
    assert not bound.grace and not kept.grace and graced.grace
    assert bound.token_hash == hash_token("old-token")
    assert bound.new_token_hash == hash_token(rotated.token)
    assert rotated.token != "old-token"
    assert bound.HasField("principal") and bound.principal == "alice"
    assert not kept.HasField("principal")


def test_update_sends_expected_version_only_when_given(
    start_node: StartNode, make_client: MakeClient
) -> None:
    address, node = start_node(leader_script)
    client = make_client([address])

    session = client.update("t", set={"a": b"1"}, delete=["b"], expected_version=3)
    client.update("t", delete=("c",))

    with_version, without = node.requests("Update")
    assert with_version.expected_version == 3 and with_version.HasField("expected_version")
    assert list(with_version.delete) == [b"b"]
    assert not without.HasField("expected_version")
    assert dict(session.attributes) == {}


def test_validate_reads_carry_consistency_and_touch(start_node: StartNode, make_client: MakeClient) -> None:
    address, node = start_node(leader_script)
    client = make_client([address])

    session = client.validate("t")
    client.validate("t", stale=True)
    client.validate("t", touch=True, stale=True)

    strong, stale, touched = node.requests("Validate")
    assert (strong.consistency, stale.consistency, touched.consistency) == (
        pb.LINEARIZABLE,
        pb.STALE,
        pb.LINEARIZABLE,
    )
    assert touched.touch and not strong.touch
    assert dict(session.attributes) == {"cart": b"[1]"}


def test_delete_by_token_and_by_handle_use_the_oneof(start_node: StartNode, make_client: MakeClient) -> None:
    address, node = start_node(leader_script)
    client = make_client([address])

    assert client.delete("t") is True
    assert client.delete_handle("h7") is True

    by_token, by_handle = node.requests("Delete")
    assert by_token.WhichOneof("target") == "token_hash"
    assert (by_handle.WhichOneof("target"), by_handle.handle) == ("handle", "h7")


def test_list_and_revoke_principal(start_node: StartNode, make_client: MakeClient) -> None:
    address, node = start_node(leader_script)
    client = make_client([address])

    sessions = client.list_sessions("alice")
    revoked = client.revoke_principal("alice", except_handle="h3")

    assert [s.handle for s in sessions] == ["h1", "h2"]
    assert sessions[1].principal is None
    assert revoked == ["h1", "h2"]
    (request,) = node.requests("RevokePrincipal")
    assert (request.principal, request.except_handle) == ("alice", "h3")
    assert request.HasField("request_id")


def test_disable_and_enable_principal_are_exactly_once_mutations(
    start_node: StartNode, make_client: MakeClient
) -> None:
    address, node = start_node(leader_script)
    client = make_client([address])

    assert client.disable_principal("alice") == ["h1"]
    client.enable_principal("alice")

    disable, enable = node.requests("SetPrincipalEnabled")
    assert (disable.principal, disable.enabled, enable.principal, enable.enabled) == (
        "alice",
        False,
        "alice",
        True,
    )
    assert disable.HasField("request_id") and enable.HasField("request_id")


def test_create_for_a_disabled_principal_raises_permission_denied_without_a_retry(
    start_node: StartNode, make_client: MakeClient
) -> None:
    def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        fail(context, grpc.StatusCode.PERMISSION_DENIED, "the principal is disabled")

    address, node = start_node(script)
    client = make_client([address])

    with pytest.raises(PermissionDenied, match="disabled"):
        client.create(principal="alice")
    assert len(node.requests("Create")) == 1


# -- construction and lifecycle ----------------------------------------------------------------


def test_plaintext_must_be_explicit() -> None:
    with pytest.raises(ValueError, match="insecure=True"):
        SessionClient(["127.0.0.1:1"])


def test_closed_client_refuses_new_calls(start_node: StartNode) -> None:
    address, node = start_node(leader_script)
    with SessionClient([address], insecure=True) as client:
        client.touch("t")
    with pytest.raises(RuntimeError, match="closed"):
        client.touch("t")
    assert len(node.calls) == 1


def test_hint_naming_a_leader_that_just_timed_out_is_not_followed_again_at_once(
    start_node: StartNode, make_client: MakeClient
) -> None:
    # A paused leader: the followers still name it until they elect another (here: on the
    # third question). The client must not wait out a second attempt timeout on it.
    asked = {"n": 0}
    lock = threading.Lock()
    new_leader, leader_node = start_node(lambda m, r, c: ok(m, r))
    paused, paused_node = start_node(lambda m, r, c: (hang_until_cancelled(c), ok(m, r))[1])

    def follower(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        with lock:
            asked["n"] += 1
            elected = asked["n"] >= 3
        fail(
            context,
            grpc.StatusCode.FAILED_PRECONDITION,
            "not leader",
            leader=new_leader if elected else paused,
        )

    follower_address, _ = start_node(follower)
    client = make_client([paused, follower_address], timeout_s=5.0, attempt_timeout_s=0.3)

    client.update("token", set={"a": b"1"})

    assert len(paused_node.requests("Update")) == 1
    assert len(leader_node.requests("Update")) == 1


# -- honest exactly-once: a forgotten client id is refused, never applied twice -------------------

CLUSTER_NOW_MS = 1_700_000_000_000


def forgetting_ids_older_than_now(method: str, request: Any, context: grpc.ServicerContext) -> Any:
    """A node that forgot every client id first used before CLUSTER_NOW_MS."""
    if request.request_id.client_epoch_ms < CLUSTER_NOW_MS:
        refuse_as_forgotten(context, CLUSTER_NOW_MS)
    return ok(method, request)


def test_first_attempt_refused_as_forgotten_is_resent_under_fresh_client_id_with_learned_epoch(
    start_node: StartNode, make_client: MakeClient
) -> None:
    address, node = start_node(forgetting_ids_older_than_now)
    client = make_client([address])

    created = client.create(principal="alice")

    refused, resent = node.requests("Create")
    assert refused.request_id.client_epoch_ms == 0
    assert resent.request_id.client_id != refused.request_id.client_id
    assert (resent.request_id.sequence, resent.request_id.client_epoch_ms) == (1, CLUSTER_NOW_MS)
    # The very same call: only the request id differs.
    resent.ClearField("request_id")
    refused.ClearField("request_id")
    assert resent == refused
    assert resent.token_hash == hash_token(created.token)


def test_refusal_after_attempts_that_definitely_failed_is_still_resent(
    start_node: StartNode, make_client: MakeClient
) -> None:
    # "No leader" from a node (sq-node set) means that attempt was never proposed.
    answers = iter(["no leader", "forgotten"])

    def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        step = next(answers, "ok")
        if step == "no leader":
            fail(context, grpc.StatusCode.UNAVAILABLE, "no leader is known; nothing was applied")
        if step == "forgotten":
            refuse_as_forgotten(context, CLUSTER_NOW_MS)
        return ok(method, request)

    address, node = start_node(script)
    client = make_client([address])

    client.update("t", increment={"n": 1})

    first, refused, resent = node.requests("Update")
    assert first.request_id == refused.request_id
    assert resent.request_id.client_id != refused.request_id.client_id
    assert resent.request_id.client_epoch_ms == CLUSTER_NOW_MS


def test_refusal_after_an_attempt_that_may_have_applied_raises_outcome_unknown(
    start_node: StartNode, make_client: MakeClient
) -> None:
    answers = iter(["commit timed out"])

    def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        if next(answers, None) is not None:
            fail(context, grpc.StatusCode.UNKNOWN, "commit timed out; it may still commit")
        refuse_as_forgotten(context, CLUSTER_NOW_MS)

    address, node = start_node(script)
    client = make_client([address], timeout_s=5.0)

    with pytest.raises(OutcomeUnknown, match=r"deduplication state expired") as info:
        client.update("t", increment={"n": 1})

    # Never sent again, under any id: a second apply of the increment is impossible.
    first, refused = node.requests("Update")
    assert first.request_id == refused.request_id
    assert "nothing was applied" not in info.value.message
    assert "may have been applied" in info.value.message


def test_refusal_of_the_resent_request_is_not_resent_again(
    start_node: StartNode, make_client: MakeClient
) -> None:
    address, node = start_node(lambda method, request, context: refuse_as_forgotten(context, CLUSTER_NOW_MS))
    client = make_client([address], timeout_s=5.0)

    with pytest.raises(Unavailable, match="nothing was applied") as info:
        client.touch("t")

    assert not isinstance(info.value, OutcomeUnknown)
    refused, resent = node.requests("Touch")
    assert refused.request_id.client_id != resent.request_id.client_id


def test_epoch_learned_from_a_refusal_is_carried_by_later_new_lanes(
    start_node: StartNode, make_client: MakeClient
) -> None:
    both_arrived = threading.Barrier(2, timeout=5.0)
    address, node = start_node(forgetting_ids_older_than_now)
    client = make_client([address])
    client.touch("t")  # refused once, then resent with the learned epoch

    def two_at_once(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        both_arrived.wait()  # two calls in flight: the second needs a new lane
        return forgetting_ids_older_than_now(method, request, context)

    node.script = two_at_once
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda _: client.touch("t"), range(2)))

    later = node.requests("Touch")[2:]
    assert sorted(r.request_id.sequence for r in later) == [1, 2]
    assert {r.request_id.client_epoch_ms for r in later} == {CLUSTER_NOW_MS}
    assert len(node.requests("Touch")) == 4  # no further refusal


def test_outcome_unknown_message_never_also_says_nothing_was_applied(
    start_node: StartNode, make_client: MakeClient
) -> None:
    # The first attempt may have applied; every later one meets a node with no leader,
    # whose own message says that *its* attempt applied nothing.
    answers = iter(["commit timed out"])

    def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        if next(answers, None) is not None:
            fail(context, grpc.StatusCode.UNKNOWN, "commit timed out")
        fail(context, grpc.StatusCode.UNAVAILABLE, "no leader is known; nothing was applied")

    address, _ = start_node(script)
    client = make_client([address], timeout_s=0.3)

    with pytest.raises(OutcomeUnknown) as info:
        client.delete("t")

    assert "nothing was applied" not in info.value.message
    assert "may have been applied" in info.value.message
    assert info.value.code is grpc.StatusCode.UNKNOWN


def test_version_conflict_carries_the_current_version_from_the_node(
    start_node: StartNode, make_client: MakeClient
) -> None:
    address, _ = start_node(
        lambda method, request, context: fail(
            context, grpc.StatusCode.ABORTED, "at version 9", extra=(("sq-version", "9"),)
        )
    )
    client = make_client([address])

    with pytest.raises(VersionConflict) as info:
        client.update("t", set={"k": b"v"}, expected_version=3)
    assert info.value.current_version == 9


def test_create_ending_in_outcome_unknown_carries_its_token(
    start_node: StartNode, make_client: MakeClient
) -> None:
    address, node = start_node(failing_n_times(10**6, grpc.StatusCode.UNKNOWN))
    client = make_client([address], timeout_s=0.3)

    with pytest.raises(OutcomeUnknown) as info:
        client.create(principal="alice")

    token = info.value.token
    assert token is not None
    assert {r.token_hash for r in node.requests("Create")} == {hash_token(token)}
    assert token not in str(info.value) and token not in repr(info.value)


def test_rotate_ending_in_outcome_unknown_carries_the_new_token(
    start_node: StartNode, make_client: MakeClient
) -> None:
    address, node = start_node(failing_n_times(10**6, grpc.StatusCode.UNKNOWN))
    client = make_client([address], timeout_s=0.3)

    with pytest.raises(OutcomeUnknown) as info:
        client.rotate("old-token", principal="alice")

    token = info.value.token
    assert token is not None and token != "old-token"
    assert {r.new_token_hash for r in node.requests("Rotate")} == {hash_token(token)}

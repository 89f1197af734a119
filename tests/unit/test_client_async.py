"""AsyncSessionClient against the scripted in-process nodes of test_client_server.py.

The same scenarios as the sync client's where they apply: routing, exactly-once retries,
honest errors, what goes over the wire, lifecycle. Each test runs its coroutine with
asyncio.run; the fake nodes are threaded grpc servers, so a node may block while the
client's loop goes on.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc
import pytest

from sessionquorum.client import (
    AsyncSessionClient,
    NotFound,
    OutcomeUnknown,
    SessionClient,
    Unavailable,
    VersionConflict,
    hash_token,
)
from sessionquorum.proto import sessionquorum_pb2 as pb
from tests.aio import run_async
from tests.unit.test_client_server import (  # noqa: F401 - start_node and dead_endpoint are fixtures
    CLUSTER_NOW_MS,
    FAST,
    Script,
    StartNode,
    dead_endpoint,
    fail,
    failing_n_times,
    forgetting_ids_older_than_now,
    hang_until_cancelled,
    leader_script,
    ok,
    refuse_as_forgotten,
    start_node,
)

_T = TypeVar("_T")
MakeClient = Callable[..., AsyncSessionClient]


def run(coroutine: Awaitable[_T]) -> _T:
    async def main() -> _T:
        return await coroutine

    return run_async(main())


@pytest.fixture
def make_client(start_node: StartNode) -> Iterator[MakeClient]:  # noqa: F811
    # Made outside any loop, as a framework's start-up code does; each test closes its own.
    def make(endpoints: list[str], **kwargs: Any) -> AsyncSessionClient:
        return AsyncSessionClient(endpoints, insecure=True, **{**FAST, **kwargs})

    yield make


async def closing(client: AsyncSessionClient, body: Callable[[AsyncSessionClient], Awaitable[_T]]) -> _T:
    async with client:
        return await body(client)


# -- the public surface is the sync client's ---------------------------------------------------


def test_async_client_has_every_public_method_of_the_sync_client_with_the_same_signature() -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in inspect.getmembers(cls)
            if not name.startswith("_") and callable(member)
        }

    sync, asynchronous = public(SessionClient), public(AsyncSessionClient)
    assert set(sync) == set(asynchronous)
    assert {"create", "validate", "update", "touch", "rotate", "delete", "list_sessions"} <= set(sync)
    assert AsyncSessionClient.endpoints is SessionClient.endpoints  # one implementation
    for name, signature in sync.items():
        assert str(asynchronous[name]) == str(signature).replace(
            "-> 'SessionClient'", "-> 'AsyncSessionClient'"
        ).replace("-> 'Iterator[", "-> 'AsyncIterator[")
        # events() returns an async iterator (`async for`), the async form of an iterator.
        if name not in ("close", "events"):
            assert inspect.iscoroutinefunction(getattr(AsyncSessionClient, name)), name
    assert inspect.iscoroutinefunction(AsyncSessionClient.close)


# -- routing ------------------------------------------------------------------------------


def test_async_follower_redirects_with_leader_hint_and_client_stays_at_leader(
    start_node: StartNode,  # noqa: F811
    make_client: MakeClient,
) -> None:
    leader_address, leader = start_node(leader_script)
    follower_address, follower = start_node(
        lambda method, request, context: fail(
            context, grpc.StatusCode.FAILED_PRECONDITION, "not the leader", node="n2", leader=leader_address
        )
    )
    client = make_client([follower_address])

    async def body(client: AsyncSessionClient) -> None:
        await client.create()
        await client.touch("t")

    run(closing(client, body))
    assert client.endpoints == (follower_address, leader_address)
    assert len(follower.calls) == 1
    assert [name for name, _ in leader.calls] == ["Create", "Touch"]


def test_async_dead_endpoint_first_in_list_is_skipped(
    start_node: StartNode,  # noqa: F811
    make_client: MakeClient,
    dead_endpoint: str,  # noqa: F811
) -> None:
    leader_address, leader = start_node(leader_script)

    async def body(client: AsyncSessionClient) -> str:
        handle = (await client.validate("t")).handle
        await client.update("t", set={"k": b"v"})
        return handle

    assert run(closing(make_client([dead_endpoint, leader_address]), body)) == "h1"
    assert [name for name, _ in leader.calls] == ["Validate", "Update"]


def test_async_unreachable_cluster_read_is_unavailable_and_mutation_outcome_unknown(
    make_client: MakeClient,
    dead_endpoint: str,  # noqa: F811
) -> None:
    async def body(client: AsyncSessionClient) -> None:
        with pytest.raises(Unavailable, match="Connection refused"):
            await client.validate("t")
        # gRPC cannot tell "refused" from "lost after sending": no promise that nothing applied.
        with pytest.raises(OutcomeUnknown):
            await client.delete("t")

    run(closing(make_client([dead_endpoint], timeout_s=0.3), body))


# -- exactly-once retries --------------------------------------------------------------------


def test_async_mutation_retry_reuses_request_id_after_unknown_outcome(
    start_node: StartNode,  # noqa: F811
    make_client: MakeClient,
) -> None:
    address, node = start_node(failing_n_times(1, grpc.StatusCode.UNKNOWN))

    async def body(client: AsyncSessionClient) -> None:
        created = await client.create(principal="alice")
        await client.touch(created.token)

    run(closing(make_client([address]), body))
    first, retry = node.requests("Create")
    assert first.SerializeToString(deterministic=True) == retry.SerializeToString(deterministic=True)
    (touch,) = node.requests("Touch")
    assert touch.request_id.client_id == first.request_id.client_id
    assert touch.request_id.sequence == first.request_id.sequence + 1


def test_async_mutation_retry_after_attempt_timeout_reuses_request_id(
    start_node: StartNode,  # noqa: F811
    make_client: MakeClient,
) -> None:
    hung = threading.Event()

    def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        if not hung.is_set():
            hung.set()
            hang_until_cancelled(context)
        return ok(method, request)

    address, node = start_node(script)
    run(closing(make_client([address], attempt_timeout_s=0.2), lambda c: c.rotate("old-token")))
    first, retry = node.requests("Rotate")
    assert first.request_id == retry.request_id
    assert first.new_token_hash == retry.new_token_hash


def test_async_mutation_always_unknown_raises_outcome_unknown_and_retires_the_lane(
    start_node: StartNode,  # noqa: F811
    make_client: MakeClient,
) -> None:
    address, node = start_node(failing_n_times(10**6, grpc.StatusCode.UNKNOWN))

    async def body(client: AsyncSessionClient) -> OutcomeUnknown:
        with pytest.raises(OutcomeUnknown, match="may have been applied") as info:
            await client.update("t", set={"k": b"v"})
        with pytest.raises(OutcomeUnknown):
            await client.update("t", set={"k": b"v"})
        return info.value

    error = run(closing(make_client([address], timeout_s=0.3), body))
    assert isinstance(error.__cause__, grpc.RpcError)
    assert error.code is grpc.StatusCode.UNKNOWN
    assert len({r.request_id.client_id for r in node.requests("Update")}) == 2


def test_async_followers_pointing_at_each_other_back_off_and_raise_unavailable(
    start_node: StartNode,  # noqa: F811
    make_client: MakeClient,
) -> None:
    addresses: dict[str, str] = {}

    def pointing_at(other: str) -> Script:
        def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
            fail(context, grpc.StatusCode.FAILED_PRECONDITION, "not the leader", leader=addresses[other])

        return script

    addresses["a"], node_a = start_node(pointing_at("b"))
    addresses["b"], node_b = start_node(pointing_at("a"))

    async def body(client: AsyncSessionClient) -> None:
        with pytest.raises(Unavailable, match="not the leader"):
            await client.create()

    run(closing(make_client([addresses["a"]], timeout_s=0.3), body))
    assert 4 <= len(node_a.calls) + len(node_b.calls) < 60


def test_async_close_during_retries_ends_mutation_with_outcome_unknown(
    start_node: StartNode,  # noqa: F811
    make_client: MakeClient,
) -> None:
    reached = threading.Event()

    def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        reached.set()
        fail(context, grpc.StatusCode.UNKNOWN, "commit timed out")

    address, _ = start_node(script)

    async def main() -> BaseException | None:
        client = make_client([address], timeout_s=60.0)
        call = asyncio.create_task(client.touch("t"))
        while not reached.is_set():
            await asyncio.sleep(0.01)
        await client.close()
        done, _ = await asyncio.wait([call], timeout=5.0)
        assert done, "close() did not end the call"
        return call.exception()

    error = run_async(main())
    assert isinstance(error, OutcomeUnknown)
    assert "closed" in error.message


def test_async_definite_answers_are_raised_without_retry(
    start_node: StartNode,  # noqa: F811
    make_client: MakeClient,
) -> None:
    missing, node = start_node(lambda m, r, c: fail(c, grpc.StatusCode.NOT_FOUND, "no session h9"))
    conflict, _ = start_node(
        lambda m, r, c: fail(c, grpc.StatusCode.ABORTED, "at version 9", extra=(("sq-version", "9"),))
    )

    async def main() -> None:
        async with make_client([missing]) as client:
            with pytest.raises(NotFound, match="no session h9"):
                await client.touch("t")
        async with make_client([conflict]) as client:
            with pytest.raises(VersionConflict) as info:
                await client.update("t", set={"k": b"v"}, expected_version=3)
            assert info.value.current_version == 9

    run_async(main())
    assert len(node.calls) == 1


def test_async_concurrent_mutations_use_different_client_ids(
    start_node: StartNode,  # noqa: F811
    make_client: MakeClient,
) -> None:
    both_arrived = threading.Barrier(2, timeout=5.0)

    def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        both_arrived.wait()  # both calls are in flight at once
        return ok(method, request)

    address, node = start_node(script)

    async def body(client: AsyncSessionClient) -> list[str]:
        return [c.token for c in await asyncio.gather(client.create(), client.create())]

    tokens = run(closing(make_client([address]), body))
    assert tokens[0] != tokens[1]
    first, second = node.requests("Create")
    assert first.request_id.client_id != second.request_id.client_id


# -- honest exactly-once: a forgotten client id is refused, never applied twice -------------------


def test_async_first_attempt_refused_as_forgotten_is_resent_under_fresh_client_id(
    start_node: StartNode,  # noqa: F811
    make_client: MakeClient,
) -> None:
    address, node = start_node(forgetting_ids_older_than_now)
    created = run(closing(make_client([address]), lambda c: c.create(principal="alice")))

    refused, resent = node.requests("Create")
    assert resent.request_id.client_id != refused.request_id.client_id
    assert (resent.request_id.sequence, resent.request_id.client_epoch_ms) == (1, CLUSTER_NOW_MS)
    assert resent.token_hash == refused.token_hash == hash_token(created.token)


def test_async_refusal_after_an_attempt_that_may_have_applied_raises_outcome_unknown_with_token(
    start_node: StartNode,  # noqa: F811
    make_client: MakeClient,
) -> None:
    answers = iter(["commit timed out"])

    def script(method: str, request: Any, context: grpc.ServicerContext) -> Any:
        if next(answers, None) is not None:
            fail(context, grpc.StatusCode.UNKNOWN, "commit timed out; it may still commit")
        refuse_as_forgotten(context, CLUSTER_NOW_MS)

    address, node = start_node(script)

    async def body(client: AsyncSessionClient) -> OutcomeUnknown:
        with pytest.raises(OutcomeUnknown, match="deduplication state expired") as info:
            await client.rotate("old-token")
        return info.value

    error = run(closing(make_client([address], timeout_s=5.0), body))
    first, refused = node.requests("Rotate")
    assert first.request_id == refused.request_id
    assert "nothing was applied" not in error.message
    assert error.token is not None and hash_token(error.token) == first.new_token_hash


# -- what goes over the wire -----------------------------------------------------------------


def test_async_requests_on_the_wire_match_the_sync_client(
    start_node: StartNode,  # noqa: F811
    make_client: MakeClient,
) -> None:
    address, node = start_node(leader_script)

    async def body(client: AsyncSessionClient) -> tuple[Any, ...]:
        created = await client.create(attributes={"cart": b"[]"}, idle_timeout_s=1800)
        session = await client.validate("t", stale=True)
        existed = await client.delete_handle("h7")
        sessions = await client.list_sessions("alice")
        revoked = await client.revoke_principal("alice", except_handle="h3")
        return created, session, existed, sessions, revoked

    created, session, existed, sessions, revoked = run(closing(make_client([address]), body))
    (create,) = node.requests("Create")
    assert create.token_hash == hash_token(created.token)
    assert created.token.encode() not in create.SerializeToString()
    assert (create.idle_timeout_ms, create.request_id.sequence) == (1_800_000, 1)
    assert created.evicted_handles == ("old",)
    (validate,) = node.requests("Validate")
    assert validate.consistency == pb.STALE
    assert dict(session.attributes) == {"cart": b"[1]"}
    assert existed is True
    assert node.requests("Delete")[0].WhichOneof("target") == "handle"
    assert [s.handle for s in sessions] == ["h1", "h2"]
    assert revoked == ["h1", "h2"]
    assert node.requests("RevokePrincipal")[0].HasField("request_id")


def test_async_disable_enable_and_graced_rotate_go_over_the_wire_as_the_sync_client_sends_them(
    start_node: StartNode,  # noqa: F811
    make_client: MakeClient,
) -> None:
    address, node = start_node(leader_script)

    async def body(client: AsyncSessionClient) -> list[str]:
        ended = await client.disable_principal("alice")
        await client.enable_principal("alice")
        await client.rotate("old-token", grace=True)
        return ended

    assert run(closing(make_client([address]), body)) == ["h1"]
    disable, enable = node.requests("SetPrincipalEnabled")
    assert (disable.principal, disable.enabled, enable.enabled) == ("alice", False, True)
    assert disable.HasField("request_id") and enable.HasField("request_id")
    assert node.requests("Rotate")[0].grace


# -- construction and lifecycle ----------------------------------------------------------------


def test_async_plaintext_must_be_explicit() -> None:
    with pytest.raises(ValueError, match="insecure=True"):
        AsyncSessionClient(["127.0.0.1:1"])


def test_async_closed_client_refuses_new_calls(
    start_node: StartNode,  # noqa: F811
) -> None:
    address, node = start_node(leader_script)

    async def main() -> None:
        async with AsyncSessionClient([address], insecure=True) as client:
            await client.touch("t")
        with pytest.raises(RuntimeError, match="closed"):
            await client.touch("t")

    run_async(main())
    assert len(node.calls) == 1


def test_async_client_made_outside_a_loop_serves_one_loop_and_refuses_another(
    start_node: StartNode,  # noqa: F811
) -> None:
    address, _ = start_node(leader_script)
    client = AsyncSessionClient([address], insecure=True)

    assert run_async(client.touch("t")).handle == "h1"
    with pytest.raises(RuntimeError, match="event loop of its first call"):
        run_async(client.touch("t"))


def test_async_node_without_batch_turns_coalescing_off_and_every_call_succeeds(
    start_node: StartNode,  # noqa: F811
    make_client: MakeClient,
) -> None:
    # The fake node has no Batch RPC (UNIMPLEMENTED), like an older release.
    address, node = start_node(lambda m, r, c: (threading.Event().wait(0.02), ok(m, r))[1])

    async def body(client: AsyncSessionClient) -> int:
        sessions = await asyncio.gather(*(client.touch(f"t{n}") for n in range(20)))
        return len(sessions)

    assert run(closing(make_client([address]), body)) == 20
    assert len(node.requests("Touch")) == 20

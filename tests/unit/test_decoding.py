"""Safe request decoding (store/decoding.py): bytes that are not the message never raise into gRPC.

The canary shows what the node would do without it: the generated deserializers raise for
every request of the batch (gRPC then answers UNKNOWN and logs a traceback per request).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError

from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc
from sessionquorum.store import decoding
from sessionquorum.store.decoding import Undecodable, safe_deserializer
from tests.malformed import NESTING_DEPTH, SAMPLES, SERVICE, batch, nested_groups

KINDS = {"truncated", "random", "invalid-utf8", "deep-nesting"}


def _message_class(name: str) -> Any:
    return getattr(pb, name)


def test_samples_cover_every_method_and_the_batch_every_kind() -> None:
    assert set(SAMPLES) == {m.name for m in SERVICE.methods}
    cases = batch()
    assert {case.kind for case in cases} == KINDS
    assert {case.method for case in cases} == set(SAMPLES)
    # Four kinds per method, minus invalid UTF-8 where a request has no string field and
    # truncation where it has no field at all.
    assert len(cases) == 63


def test_generated_deserializers_raise_for_every_malformed_request_canary() -> None:
    raised = 0
    for case in batch():
        with pytest.raises(DecodeError):
            _message_class(case.message_name).FromString(case.data)
        raised += 1
    assert raised == len(batch()) == 63


def test_safe_deserializer_turns_each_malformed_request_into_undecodable_naming_the_message() -> None:
    for case in batch():
        decoded = safe_deserializer(_message_class(case.message_name).FromString, case.message_name)(
            case.data
        )
        assert isinstance(decoded, Undecodable), case
        assert decoded.message.startswith(f"request is not a valid {case.message_name}: "), decoded
        assert "sessionquorum.v1" not in decoded.message  # protobuf's prefix is cut
    utf8 = next(c for c in batch() if c.kind == "invalid-utf8")
    decoded = safe_deserializer(_message_class(utf8.message_name).FromString, utf8.message_name)(utf8.data)
    assert decoded.reason == "String field had bad UTF-8"


def test_safe_deserializer_passes_valid_requests_and_nesting_within_the_limit_through() -> None:
    for method, sample in SAMPLES.items():
        name = SERVICE.methods_by_name[method].input_type.name
        decode = safe_deserializer(_message_class(name).FromString, name)
        assert decode(sample.SerializeToString()) == sample
    nested = safe_deserializer(pb.StatusRequest.FromString, "StatusRequest")(
        nested_groups(NESTING_DEPTH // 4)
    )
    assert isinstance(nested, pb.StatusRequest)


def test_recursion_error_of_a_python_decoder_is_refused_as_nested_too_deeply() -> None:
    def recurse(data: bytes) -> object:
        raise RecursionError("maximum recursion depth exceeded")

    decoded = safe_deserializer(recurse, "StatusRequest")(b"")
    assert decoded == Undecodable("StatusRequest", "nested too deeply")


def test_add_servicer_refuses_when_the_generated_table_cannot_be_captured() -> None:
    def registers_nothing(servicer: object, server: object) -> None:
        pass

    async def refuse(request: Undecodable, context: Any) -> None:
        raise AssertionError("not called")

    async def scenario() -> None:  # grpc.aio.server() wants an event loop (none is current by then)
        decoding.add_servicer(registers_nothing, object(), SERVICE, grpc.aio.server(), refuse)

    with pytest.raises(RuntimeError, match="could not capture"):
        asyncio.run(scenario())


class _Echo(pb_grpc.SessionStoreServicer):
    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        return pb.StatusResponse(node_id="echo", state_digest="yes" if request.digest else "")


def test_guarded_server_answers_every_malformed_request_invalid_argument_and_valid_ones_normally() -> None:
    async def scenario() -> None:
        server = grpc.aio.server()

        async def refuse(request: Undecodable, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)

        echo = _Echo()  # type: ignore[abstract]  # the other methods stay unimplemented
        decoding.add_servicer(pb_grpc.add_SessionStoreServicer_to_server, echo, SERVICE, server, refuse)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                for case in batch():
                    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                        case.path, request_serializer=None, response_deserializer=None
                    )
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await call(case.data, timeout=10)
                    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
                    assert f"not a valid {case.message_name}" in (info.value.details() or "")
                status = await pb_grpc.SessionStoreStub(channel).Status(
                    pb.StatusRequest(digest=True), timeout=10
                )
                assert (status.node_id, status.state_digest) == ("echo", "yes")
        finally:
            await server.stop(None)

    asyncio.run(scenario())

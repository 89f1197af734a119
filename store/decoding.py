"""Request decoding that never raises into gRPC: an undecodable request is refused, not a crash.

grpc.aio runs a method's `request_deserializer` before the handler. The generated one
(`XRequest.FromString`) raises on a truncated message, invalid UTF-8 in a string field or
nesting past protobuf's depth limit (100 in upb: deeply nested unknown groups), and gRPC
then answers UNKNOWN (which the client reads as "outcome unknown" and retries) and logs a
traceback per request. Measured before: every such request, 7 log lines.

`add_servicer` registers the generated method table (captured from the generated
`add_..._to_server`, which stays untouched) with each deserializer wrapped: a request
that does not decode becomes an `Undecodable` marker, and the handler hands it to
`refuse`, which the service answers with INVALID_ARGUMENT through its one error boundary.
A request larger than `grpc.max_receive_message_length` never gets here: gRPC refuses it
itself with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

# What protobuf's decoders raise for bytes that are not the message: upb raises
# DecodeError for all of them; the pure-Python decoder may raise the others.
_DECODE_ERRORS = (DecodeError, UnicodeDecodeError, RecursionError, ValueError)
REASON_MAX_CHARS = 120


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A request that is not a valid `message_name`; `reason` is protobuf's, shortened."""

    message_name: str
    reason: str

    @property
    def message(self) -> str:
        return f"request is not a valid {self.message_name}: {self.reason}"


def _reason(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    # upb says "Error parsing message with type 'pkg.Name': <why>"; the name is ours already.
    text = str(exc).rpartition("': ")[2] or type(exc).__name__
    return text[:REASON_MAX_CHARS]


def safe_deserializer(deserialize: Callable[[bytes], Any], message_name: str) -> Callable[[bytes], Any]:
    """`deserialize`, but bytes it cannot decode become an `Undecodable` instead of raising."""

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except _DECODE_ERRORS as exc:
            return Undecodable(message_name, _reason(exc))

    return decode


Refuse = Callable[[Undecodable, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
Behaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def _guarded(handler: grpc.RpcMethodHandler[Any, Any], message_name: str, refuse: Refuse) -> Any:
    if not handler.request_streaming and handler.response_streaming and handler.unary_stream is not None:
        return _guarded_stream(handler, message_name, refuse)
    if handler.request_streaming or handler.response_streaming or handler.unary_unary is None:
        raise TypeError(f"only unary-unary and unary-stream methods are guarded; {message_name} is not")
    assert handler.request_deserializer is not None
    behaviour = cast(Behaviour, handler.unary_unary)

    async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, Undecodable):
            return await refuse(request, context)
        return await behaviour(request, context)

    return grpc.unary_unary_rpc_method_handler(
        unary_unary,
        request_deserializer=safe_deserializer(handler.request_deserializer, message_name),
        response_serializer=handler.response_serializer,
    )


def _guarded_stream(handler: grpc.RpcMethodHandler[Any, Any], message_name: str, refuse: Refuse) -> Any:
    """A server-streaming method: the same refusal, then the handler's stream.

    Handlers come in grpc.aio's two forms: an async generator (SnapshotSave yields its
    chunks) or a coroutine that writes with `context.write` (Events).
    """
    assert handler.request_deserializer is not None and handler.unary_stream is not None
    if inspect.isasyncgenfunction(handler.unary_stream):
        generator = cast(Callable[[Any, Any], AsyncIterator[Any]], handler.unary_stream)

        async def yielding(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await refuse(request, context)
                return
            async for response in generator(request, context):
                yield response

        stream: Any = yielding
    else:
        behaviour = cast(Behaviour, handler.unary_stream)

        async def writing(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            if isinstance(request, Undecodable):
                await refuse(request, context)
                return
            await behaviour(request, context)

        stream = writing
    return grpc.unary_stream_rpc_method_handler(
        stream,
        request_deserializer=safe_deserializer(handler.request_deserializer, message_name),
        response_serializer=handler.response_serializer,
    )


class Registrar(Protocol):
    """Where method handlers are registered: a grpc.aio server, or authz's guarded registry."""

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None: ...

    def add_registered_method_handlers(
        self, service_name: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None: ...


class _Capture:
    """Stands in for the server while the generated code registers its method table."""

    def __init__(self) -> None:
        self.tables: dict[str, Mapping[str, grpc.RpcMethodHandler[Any, Any]]] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # built from the same table below, with the guarded handlers

    def add_registered_method_handlers(
        self, service_name: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.tables[service_name] = handlers


def add_servicer(
    add_to_server: Callable[[Any, Any], None],
    servicer: object,
    service: ServiceDescriptor,
    server: Registrar,
    refuse: Refuse,
) -> None:
    """Register `servicer` as `add_to_server` would, with every request decoded safely."""
    capture = _Capture()
    add_to_server(servicer, capture)
    table = capture.tables.get(service.full_name)
    if table is None or set(table) != {m.name for m in service.methods}:
        # The generated code registered differently (a grpcio-tools upgrade): fail at start.
        raise RuntimeError(f"could not capture the generated method table of {service.full_name}")
    guarded = {
        name: _guarded(handler, service.methods_by_name[name].input_type.name, refuse)
        for name, handler in table.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, guarded),))
    server.add_registered_method_handlers(service.full_name, guarded)

"""One way to wrap a gRPC method handler, whatever its kind: the interceptors of both services that run around
a call use it (authentication does not wrap: it refuses without reading the request).

gRPC has four kinds of handler (unary or streaming requests, unary or streaming responses), each with its
own constructor; `around` sees only the call's context and runs around the handler's whole work, the
streaming of every response included. `requests` may replace how each request message is read and checked.
"""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import grpc

Around = Callable[[grpc.ServicerContext], AbstractContextManager[None]]


Deserializer = Callable[[bytes], Any] | None


@dataclass(frozen=True)
class RequestReading:
    """How a wrapped handler reads its request messages: `deserializer` makes, from the handler's own, what
    turns each one's bytes into a message, and `check` (run inside `around`, as the handler takes each
    message) returns the message or raises."""

    deserializer: Callable[[Deserializer], Deserializer]
    check: Callable[[Any], Any]


def _unchanged(value: Any) -> Any:
    return value


_CONSTRUCTORS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _behaviour(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    return handler.unary_unary or handler.stream_unary or handler.unary_stream or handler.stream_stream


def wrap_handler(
    handler: grpc.RpcMethodHandler, around: Around, requests: RequestReading | None = None
) -> grpc.RpcMethodHandler:
    """`handler`, each of whose calls runs inside `around(context)`, its requests read as `requests` says."""
    inner = _behaviour(handler)
    deserializer, check = handler.request_deserializer, _unchanged
    if requests is not None:
        deserializer, check = requests.deserializer(deserializer), requests.check

    def checked(request: Any) -> Any:
        return map(check, request) if handler.request_streaming else check(request)

    if handler.response_streaming:

        def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with around(context):
                yield from inner(checked(request), context)

        behaviour: Callable[..., Any] = streamed
    else:

        def answered(request: Any, context: grpc.ServicerContext) -> Any:
            with around(context):
                return inner(checked(request), context)

        behaviour = answered
    constructor = _CONSTRUCTORS[(handler.request_streaming, handler.response_streaming)]
    return constructor(behaviour, deserializer, handler.response_serializer)

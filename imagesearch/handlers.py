"""One way to wrap a gRPC method handler, whatever its kind: every interceptor of both services uses it.

gRPC has four kinds of handler (unary or streaming requests, unary or streaming responses), each with its
own constructor; `around` sees only the call's context and runs around the handler's whole work, the
streaming of every response included.
"""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import grpc

Around = Callable[[grpc.ServicerContext], AbstractContextManager[None]]

_CONSTRUCTORS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _behaviour(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    return handler.unary_unary or handler.stream_unary or handler.unary_stream or handler.stream_stream


def wrap_handler(handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    """`handler`, each of whose calls runs inside `around(context)`."""
    inner = _behaviour(handler)
    if handler.response_streaming:

        def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with around(context):
                yield from inner(request, context)

        behaviour: Callable[..., Any] = streamed
    else:

        def answered(request: Any, context: grpc.ServicerContext) -> Any:
            with around(context):
                return inner(request, context)

        behaviour = answered
    constructor = _CONSTRUCTORS[(handler.request_streaming, handler.response_streaming)]
    return constructor(behaviour, handler.request_deserializer, handler.response_serializer)

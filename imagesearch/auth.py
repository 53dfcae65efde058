"""Bearer-token authentication for a gRPC server: `authorization: Bearer <token>` on every call.

The health service stays open, so that load balancers and orchestrators can probe without a token.
"""

import hmac
from collections.abc import Iterable

import grpc

from .headers import AUTHORIZATION

_OPEN = "/grpc.health.v1.Health/"


def _refuse(message: str) -> grpc.RpcMethodHandler:
    def refuse(request, context):  # type: ignore[no-untyped-def]
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(refuse)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = [token.encode() for token in tokens if token]

    def _allowed(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        offered = header.removeprefix("Bearer ").encode()
        return any(hmac.compare_digest(offered, token) for token in self._tokens)

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        if handler_call_details.method.startswith(_OPEN):
            return continuation(handler_call_details)
        header = dict(handler_call_details.invocation_metadata or ()).get(AUTHORIZATION)
        if self._allowed(header):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        reason = "missing bearer token" if not header else "invalid bearer token"
        message = f"{reason}: send `authorization: Bearer <token>` (imgsearch --token / IMGSEARCH_TOKEN)"
        if handler is not None and handler.stream_stream:

            def refuse_stream(request_iterator, context):  # type: ignore[no-untyped-def]
                context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
                yield

            return grpc.stream_stream_rpc_method_handler(refuse_stream)
        return _refuse(message)

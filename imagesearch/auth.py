"""Bearer-token authentication for a gRPC server: `authorization: Bearer <token>` on every call.

The health service stays open, so that load balancers and orchestrators can probe without a token.
"""

import hmac
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import grpc

from .handlers import wrap_handler
from .headers import AUTHORIZATION

_OPEN = "/grpc.health.v1.Health/"


def _refusal(message: str) -> Callable[[grpc.ServicerContext], Iterator[None]]:
    @contextmanager
    def refuse(context: grpc.ServicerContext) -> Iterator[None]:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # never reached: abort raises, so the handler never runs

    return refuse


class BearerTokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = [token.encode() for token in tokens if token]

    def _allowed(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        offered = header.removeprefix("Bearer ").encode()
        return any(hmac.compare_digest(offered, token) for token in self._tokens)

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_OPEN):
            return handler
        header = dict(handler_call_details.invocation_metadata or ()).get(AUTHORIZATION)
        if self._allowed(header):
            return handler
        reason = "missing bearer token" if not header else "invalid bearer token"
        message = f"{reason}: send `authorization: Bearer <token>` (imgsearch --token / IMGSEARCH_TOKEN)"
        return wrap_handler(handler, _refusal(message))

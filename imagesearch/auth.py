"""Bearer-token authentication for a gRPC server: `authorization: Bearer <token>` on every call.

The health service stays open, so that load balancers and orchestrators can probe without a token.
"""

import hmac
import logging
from collections.abc import Iterable, Iterator
from typing import Any, NoReturn

import grpc

from .headers import AUTHORIZATION, unsendable

log = logging.getLogger(__name__)

_OPEN = "/grpc.health.v1.Health/"


def bearer_tokens(setting: str) -> list[str]:
    """The tokens of a comma-separated `auth_tokens` setting, each stripped; empty: none (no authentication).

    ValueError when the setting is not empty yet names no token ("," from two unset variables joined), which
    would otherwise switch authentication off in silence."""
    tokens = [token for token in (entry.strip() for entry in setting.split(",")) if token]
    if setting and not tokens:
        raise ValueError(f"auth_tokens {setting!r} holds no token: give one or more, or leave it empty")
    for place, token in enumerate(tokens, 1):
        if why := unsendable(token, f"auth_tokens' token {place}"):
            raise ValueError(why)  # no caller could ever send it
    return tokens


def _refusing(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler for `handler`'s method that refuses at once. It takes the requests as a stream and never
    reads them: a unary request would be read whole (up to the message limit) before any code of ours runs,
    and flow control now stops a refused caller's upload instead."""

    def refuse(requests: Iterator[Any], context: grpc.ServicerContext) -> NoReturn:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    constructor = (
        grpc.stream_stream_rpc_method_handler
        if handler.response_streaming
        else grpc.stream_unary_rpc_method_handler
    )
    return constructor(refuse, handler.request_deserializer, handler.response_serializer)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = [token.encode() for token in tokens]
        log.info("authentication: %d bearer tokens", len(self._tokens))

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
        return _refusing(handler, message)

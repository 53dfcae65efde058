"""Call metadata the services and the SDK agree on (part of the contract, beside protos/)."""

from collections.abc import Iterable
from typing import Any

import grpc

AUTHORIZATION = "authorization"  # "Bearer <token>"
REQUEST_ID = "x-request-id"  # follows a call from the client through the search service to the encoder
# Trailing metadata of every answer: the service that gave it ("imagesearch.v1.SearchService"), so that a
# caller can tell a service's own UNAVAILABLE (its encoder is down, say) from a service it cannot reach.
SERVED_BY = "x-served-by"


def answered_by_a_service(error: grpc.RpcError) -> bool:
    """Whether a failed call was answered by a service's own code, which names itself (SERVED_BY), and not by
    gRPC alone: a service out of reach, a message over its limit. grpc's and grpc.aio's errors alike."""
    trailing: Iterable[Any] = error.trailing_metadata() or ()  # (key, value) pairs
    return SERVED_BY in {key for key, _ in trailing}


def bearer(token: str) -> list[tuple[str, str]]:
    return [(AUTHORIZATION, f"Bearer {token}")] if token else []

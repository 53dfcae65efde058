"""Call metadata the services and the SDK agree on (part of the contract, beside protos/)."""

import re
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


_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")  # what a gRPC text header carries


def unsendable(token: str, named: str) -> str:
    """Why `token` (which the message calls `named`, never quoting it: it is a secret) cannot be sent as a
    bearer token, or "": gRPC refused it only when a call sent it, with INTERNAL and a log line."""
    if _HEADER_VALUE.fullmatch(token):
        return ""
    return (
        f"{named} holds a character a gRPC header cannot carry (a line break, another control character or "
        "one outside ASCII): a token is printable ASCII"
    )


def bearer(token: str) -> list[tuple[str, str]]:
    return [(AUTHORIZATION, f"Bearer {token}")] if token else []

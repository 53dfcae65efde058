"""Call metadata the services and the SDK agree on (part of the contract, beside protos/)."""

AUTHORIZATION = "authorization"  # "Bearer <token>"
REQUEST_ID = "x-request-id"  # follows a call from the client through the search service to the encoder
# Trailing metadata of every answer: the service that gave it ("imagesearch.v1.SearchService"), so that a
# caller can tell a service's own UNAVAILABLE (its encoder is down, say) from a service it cannot reach.
SERVED_BY = "x-served-by"


def bearer(token: str) -> list[tuple[str, str]]:
    return [(AUTHORIZATION, f"Bearer {token}")] if token else []

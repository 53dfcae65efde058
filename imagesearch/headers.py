"""Call metadata the services and the SDK agree on (part of the contract, beside protos/)."""

AUTHORIZATION = "authorization"  # "Bearer <token>"
REQUEST_ID = "x-request-id"  # follows a call from the client through the search service to the encoder


def bearer(token: str) -> list[tuple[str, str]]:
    return [(AUTHORIZATION, f"Bearer {token}")] if token else []

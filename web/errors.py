"""Every failure as a JSON body {"error": message} with the HTTP status that matches it."""

import logging

import grpc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from client import ImageSearchError

# What a browser should hear for each status of the search service.
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
BAD_GATEWAY = 502  # anything else is the search service failing, or refusing this tier (its token, say)
# What a failure of the tiers behind says to whoever opened the page, in place of their words: those name
# internal addresses (of the encoder, Milvus, the search service) and are logged instead.
_FAILING = {
    grpc.StatusCode.UNAVAILABLE: "is unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "did not answer in time",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "is full, or a call to it was over one of its limits",
    # Its caller: this tier (--search-token) for the search service, the search service for the encoder.
    grpc.StatusCode.UNAUTHENTICATED: "refused its caller's token",
    grpc.StatusCode.PERMISSION_DENIED: "refused its caller's token",
}

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request refused by the web tier itself, before the search service is asked."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def api_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    # After a 408 the rest of the body may still come: the connection closes rather than read it for good.
    closing = {"Connection": "close"} if error.status == 408 else None
    return error_response(error.status, error.message, closing)


def _failing_tier(error: ImageSearchError) -> str:
    """Which tier failed, by the search service's words (which name the encoder or Milvus when it was)."""
    if error.reached and error.message.startswith("encoder at "):
        return "the encoder"
    # "Milvus at …", "… failed in Milvus", "the Milvus Lite file …"
    if error.reached and "Milvus" in error.message:
        return "the search service's Milvus"
    return "the search service"


async def search_service_error(request: Request, error: Exception) -> JSONResponse:
    """A refusal of the request with the search service's words, which name what was wrong in it; a failure
    of the tiers behind with which failed, and how, but not where: its words are logged."""
    assert isinstance(error, ImageSearchError)
    status = _HTTP_STATUS.get(error.code, BAD_GATEWAY)
    if status < 500:
        return error_response(status, error.message)
    fields = {"status": status, "request_id": request.state.request_id}
    log.warning("the search service failed: %s", error, extra={"fields": fields})
    failing = _FAILING.get(error.code, "failed")
    return error_response(
        status,
        f"{_failing_tier(error)} {failing} ({error.code.name}); the web tier's log has its words under this "
        "answer's x-request-id",
    )


async def http_error(request: Request, error: Exception) -> JSONResponse:
    """Starlette's own refusals (no such route, wrong method) in the same JSON shape, with their headers (a
    405's Allow names the methods the route takes)."""
    assert isinstance(error, HTTPException)
    return error_response(error.status_code, error.detail, error.headers)


async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
    return error_response(500, f"the web tier failed: {type(error).__name__}")


HANDLERS = {
    ApiError: api_error,
    ImageSearchError: search_service_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}

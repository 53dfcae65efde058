"""Every failure as a JSON body {"error": message} with the HTTP status that matches it."""

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


async def search_service_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ImageSearchError)
    return error_response(_HTTP_STATUS.get(error.code, BAD_GATEWAY), error.message)


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

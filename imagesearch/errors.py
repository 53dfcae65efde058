"""The error model of both services: handlers raise ServiceError, one interceptor turns it into a status."""

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from .handlers import wrap_handler


class ServiceError(Exception):
    """A call refused or failed, with the status a caller gets and a message naming the bad item."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_argument(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message)


# A status message travels in a header, percent-encoded (up to 12 bytes a character), and gRPC refuses headers
# over 16 KiB: the caller would get RESOURCE_EXHAUSTED "Stream removed" instead. Messages quote what was
# refused (a filter, an id), so a long one keeps its start and its end, where Milvus puts its reason.
MAX_STATUS_CHARACTERS = 1000


def status_message(message: str) -> str:
    """`message`, or its start and end when it is over MAX_STATUS_CHARACTERS."""
    if len(message) <= MAX_STATUS_CHARACTERS:
        return message
    kept = MAX_STATUS_CHARACTERS // 2
    left_out = len(message) - 2 * kept
    return f"{message[:kept]} … ({left_out} characters left out) … {message[-kept:]}"


@contextmanager
def _status_of_service_errors(context: grpc.ServicerContext) -> Iterator[None]:
    try:
        yield
    except ServiceError as error:
        context.abort(error.code, status_message(error.message))


class ServiceErrorInterceptor(grpc.ServerInterceptor):
    """Turns a ServiceError raised by any handler, of any kind, into its gRPC status and message."""

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        return None if handler is None else wrap_handler(handler, _status_of_service_errors)

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


@contextmanager
def _status_of_service_errors(context: grpc.ServicerContext) -> Iterator[None]:
    try:
        yield
    except ServiceError as error:
        context.abort(error.code, error.message)


class ServiceErrorInterceptor(grpc.ServerInterceptor):
    """Turns a ServiceError raised by any handler, of any kind, into its gRPC status and message."""

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        return None if handler is None else wrap_handler(handler, _status_of_service_errors)

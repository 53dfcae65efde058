"""The error model of both services: handlers raise ServiceError, one interceptor turns it into a status.

A request message that protobuf cannot parse (a text field that is not UTF-8, or bytes that are no such
message) is refused the same way, with INVALID_ARGUMENT, where gRPC alone would answer INTERNAL.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from .handlers import Deserializer, RequestReading, wrap_handler

log = logging.getLogger(__name__)


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
    except Exception as error:
        if context.code() is not None:  # the handler's own context.abort, which grpc raises as an Exception
            raise
        # gRPC's own answer was UNKNOWN, "Exception calling application: " and the exception's text, which
        # names the service's internals (a protobuf type, a path) to any caller.
        log.exception("the call failed unexpectedly")
        context.abort(
            grpc.StatusCode.INTERNAL, f"the service failed ({type(error).__name__}): its log says why"
        )


@dataclass(frozen=True)
class _Unparsed:
    """A request message that protobuf could not parse, in place of the message: refused when it is taken."""

    problem: str


def _parsing_or_marking(deserializer: Deserializer) -> Deserializer:
    if deserializer is None:
        return None
    parse = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as error:
            return _Unparsed(str(error))

    return deserialize


def _refusing_unparsed(request: Any) -> Any:
    if isinstance(request, _Unparsed):
        raise invalid_argument(f"the request cannot be read: {request.problem}")
    return request


_READING = RequestReading(_parsing_or_marking, _refusing_unparsed)


class ServiceErrorInterceptor(grpc.ServerInterceptor):
    """Turns a ServiceError raised by any handler, of any kind, into its gRPC status and message, and refuses
    a request message that cannot be parsed."""

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        return None if handler is None else wrap_handler(handler, _status_of_service_errors, _READING)

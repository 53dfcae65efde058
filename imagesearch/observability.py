"""What operators see: Prometheus metrics, one JSON log line per call, and a request id across services.

Every answer also names the service that gave it in its trailing metadata (`x-served-by`).

A caller may send `x-request-id`; otherwise the first service makes one. It is kept in a context variable
for the call, sent on to the encoder by the search service, and written in every log line of the call.
"""

import contextvars
import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from .handlers import wrap_handler
from .headers import REQUEST_ID, SERVED_BY

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_QUIET_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

log = logging.getLogger("imagesearch.access")


def current_request_id() -> str:
    return _request_id.get()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if request_id := current_request_id():
            entry["request_id"] = request_id
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(format: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """Serves /metrics over HTTP on `port` (0: any free one; the server's `server_port` says which)."""
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server


class ObservabilityInterceptor(grpc.ServerInterceptor):
    """Counts and times every call by method and status, logs it as JSON, and carries its request id."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "grpc_server_handled",
            "Calls finished, by method and status code",
            ["method", "code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds", "Time to finish a call, by method", ["method"], registry=registry
        )

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_QUIET_SERVICES):
            return handler
        incoming = dict(handler_call_details.invocation_metadata or ())
        request_id = incoming.get(REQUEST_ID) or uuid.uuid4().hex
        service, short_method = method.strip("/").split("/", 1)

        @contextmanager
        def observed(context: grpc.ServicerContext) -> Iterator[None]:
            context.set_trailing_metadata([(SERVED_BY, service)])
            token = _request_id.set(request_id)
            started, error = time.perf_counter(), None
            try:
                yield
            except BaseException as raised:
                error = raised
                raise
            finally:
                code = context.code() or (
                    grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK
                )
                seconds = time.perf_counter() - started
                self.handled.labels(short_method, code.name).inc()
                self.seconds.labels(short_method).observe(seconds)
                fields = {"method": short_method, "code": code.name, "ms": round(seconds * 1000, 1)}
                log.info(
                    "%s %s", short_method, code.name, extra={"fields": {**fields, "request_id": request_id}}
                )
                _request_id.reset(token)

        return wrap_handler(handler, observed)

"""What operators see: Prometheus metrics, one JSON log line per call, and a request id across services.

Every answer of a method the server has also names the service that gave it in its trailing metadata
(`x-served-by`).

A caller may send `x-request-id` of 1 to 128 letters, digits and `._:-`; otherwise (none, or any other) the
first service makes one, so that a caller can neither bloat every log line nor push the metadata sent on to
the encoder over its size limit. It is kept in a context variable for the call (calls.py), sent on to the
encoder by the search service, and written in every log line of the call.
"""

import json
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, NoReturn
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from .calls import current_request_id, handling, request_id_of
from .handlers import wrap_handler
from .headers import SERVED_BY
from .ports import bare_host

_QUIET_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# What the search service's health check asks every encoder every few seconds, and what the SDK asks before
# each ingest: an answer of these is logged at DEBUG (its failure at INFO), counted as any call. At INFO, an
# idle `imgsearch up` wrote one line every 5 s.
_DESCRIPTIONS = ("GetModelInfo", "GetLimits")
# A caller's deadline reaches the server as a timeout, which the server counts from when the call arrived: its
# own deadline falls a little later than the caller's, by the call's transit, so the caller's cut at the
# deadline arrives with a little time apparently left. A call ended this close to its deadline was cut by it.
_DEADLINE_SLACK_S = 0.25

# A call to a method this server lacks is counted and logged as method "unknown", with the path it asked for
# (cut to this length) in its log line only: a metric label of every path sent would grow without bound.
_UNKNOWN_METHOD = "unknown"
_LOGGED_PATH_CHARS = 200

# How grpc's server (grpc._server._CANCELLED) records a call its caller cancelled before the server's status.
_GRPC_CANCELLED = "cancelled"

# The bounds (seconds) of every latency histogram of both services. The default ones start at 5 ms, where a
# Milvus Lite call (0.4-1 ms) and a GPU EncodeText (target p50 <= 2 ms) all fall into the first bucket; these
# resolve 0.5, 1 and 2 ms and reach the encoder call's 60 s deadline; longer calls (Ingest streams) are +Inf.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

log = logging.getLogger("imagesearch.access")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The call's request id and the record's own fields (an access line's method, code and ms)."""
    request_id = current_request_id()
    return {**({"request_id": request_id} if request_id else {}), **getattr(record, "fields", {})}


def _time(record: logging.LogRecord) -> str:
    """ISO 8601 with milliseconds and the UTC offset: 2026-11-28T13:27:45.123+00:00."""
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """A line for people: time, level, logger and message, then the JSON line's fields as `key=value`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _time(record)  # as the JSON lines' time, not logging's local time without its offset

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = (f"{key}={value}" for key, value in _fields(record).items())
        return " ".join((super().formatMessage(record), *fields))


def log_formatter(format: str) -> logging.Formatter:
    """The formatter of `--log-format` (json or text)."""
    return JsonFormatter() if format == "json" else TextFormatter()


def ignore_setuptools_deprecation() -> None:
    """clip and milvus_lite import pkg_resources (setuptools<81 keeps it for them): its deprecation warning is
    no concern of whoever runs a service, and it was the one line of every start's log that is not JSON."""
    warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)


def configure_logging(format: str = "json", level: str = "INFO") -> None:
    """Every record, a library's too, on stderr in `format`. Called once the service's modules are imported:
    pymilvus installs plain-text handlers of its own on its loggers when it is imported, and stops their
    records there (its reconnection warnings and tracebacks were the lines of a JSON log that were not
    JSON)."""
    handler = logging.StreamHandler()
    handler.setFormatter(log_formatter(format))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and logger.handlers:  # one silenced on purpose has none
            logger.handlers.clear()
            logger.propagate = True


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """Serves /metrics over HTTP on `port` (0: any free one; the server's `server_port` says which)."""
    server, _ = start_http_server(port, addr=bare_host(host), registry=registry)
    return server


class ObservabilityInterceptor(grpc.ServerInterceptor):
    """Counts and times every call by method and status, logs it, and carries its request id and `Caller`. A
    call that ends after its deadline counts as DEADLINE_EXCEEDED, and one its caller cancelled as CANCELLED:
    what its caller saw, whatever the handler did (an Ingest stream cut so may end OK where gRPC hands the
    cut on as the stream's end)."""

    def __init__(self, registry: CollectorRegistry, services: Sequence[str]) -> None:
        self.services = services  # what this server serves, named to callers of a method it lacks
        self.handled = Counter(
            "grpc_server_handled",
            "Calls finished, by method and status code",
            ["method", "code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time to finish a call, by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if method.startswith(_QUIET_SERVICES):
            return handler
        request_id = request_id_of(dict(handler_call_details.invocation_metadata or ()))
        logged = {"request_id": request_id}
        if handler is None:  # no SERVED_BY: the SDK tells its user which service it expected there
            handler, short_method, served_by = _refusing(method, self.services), _UNKNOWN_METHOD, []
            logged["path"] = method[:_LOGGED_PATH_CHARS]
        else:
            service, short_method = method.strip("/").split("/", 1)
            served_by = [(SERVED_BY, service)]

        @contextmanager
        def observed(context: grpc.ServicerContext) -> Iterator[None]:
            context.set_trailing_metadata(served_by)
            started, error = time.perf_counter(), None
            try:
                with handling(request_id, context):
                    yield
            except BaseException as raised:
                error = raised
                raise
            finally:
                # Not active: its caller cancelled it, and the handler's status never came.
                code = (
                    _cut_short(context, cancelled=not context.is_active())
                    or context.code()
                    or (grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK)
                )
                account = partial(self._account, short_method, logged, time.perf_counter() - started)
                if code == grpc.StatusCode.OK and handler.request_streaming:
                    # gRPC may hand the handler a cancel as its requests' end before it records the cancel
                    # (grpc/grpc#33038): the handler's OK stands only once the call has ended.
                    if not context.add_callback(lambda: account(_once_ended(context))):
                        account(_once_ended(context))
                else:
                    account(code)

        return wrap_handler(handler, observed)

    def _account(self, method: str, logged: dict[str, str], seconds: float, code: grpc.StatusCode) -> None:
        """Counts, times and logs a call that ended with `code` after `seconds` of its handler; `logged` are
        the log line's fields of the call (its request id)."""
        self.handled.labels(method, code.name).inc()
        self.seconds.labels(method).observe(seconds)
        fields = {"method": method, "code": code.name, "ms": round(seconds * 1000, 1)}
        level = logging.DEBUG if code == grpc.StatusCode.OK and method in _DESCRIPTIONS else logging.INFO
        log.log(level, "%s %s", method, code.name, extra={"fields": {**fields, **logged}})


def _refusing(method: str, services: Sequence[str]) -> grpc.RpcMethodHandler:
    """The handler of a call to `method`, which this server lacks: UNIMPLEMENTED, naming what it serves."""

    def refuse(requests: Iterator[bytes], context: grpc.ServicerContext) -> NoReturn:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"this server has no method {method[:_LOGGED_PATH_CHARS]}: it serves {', '.join(services)}",
        )

    return grpc.stream_stream_rpc_method_handler(refuse)


def _cut_short(context: grpc.ServicerContext, cancelled: bool) -> grpc.StatusCode | None:
    """What the caller of a call cut short saw: DEADLINE_EXCEEDED at its deadline, else CANCELLED where it
    was `cancelled`; None for a call not cut short."""
    if context.time_remaining() <= _DEADLINE_SLACK_S:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED if cancelled else None


def _once_ended(context: grpc.ServicerContext) -> grpc.StatusCode:
    """What the caller of an ended call whose handler returned OK saw: CANCELLED (or DEADLINE_EXCEEDED) where
    the call was cut before that OK went out. Only gRPC's own record of the call says so: no public method
    does once the call has ended."""
    cancelled = getattr(getattr(context, "_state", None), "client", None) == _GRPC_CANCELLED
    return (_cut_short(context, cancelled) if cancelled else None) or grpc.StatusCode.OK

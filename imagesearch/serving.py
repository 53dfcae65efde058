"""The lifecycle both services share: a gRPC server with health checking, reflection, and a graceful stop."""

import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from .auth import BearerTokenInterceptor, bearer_tokens
from .channels import PINGS_ACCEPTED
from .errors import ServiceError, ServiceErrorInterceptor
from .flags import require_at_most, require_ports, require_seconds, setting
from .observability import ObservabilityInterceptor, serve_metrics
from .ports import require_listenable
from .tls import server_credentials

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    """What every service's settings hold: where it listens, who may call it, how it is observed."""

    host: str = setting("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = setting(0, "port to listen on (0: any free port)")
    grpc_workers: int = setting(32, "threads serving calls")
    shutdown_grace_s: float = setting(30.0, "how long in-flight calls may run after SIGTERM")
    auth_tokens: str = setting(
        "", "comma-separated bearer tokens callers must send (empty: no authentication)"
    )
    tls_cert: str = setting("", "PEM certificate chain of this service (with --tls-key: TLS)")
    tls_key: str = setting("", "PEM private key of this service")
    tls_ca: str = setting("", "PEM CA that callers' certificates must be signed by (mutual TLS)")
    metrics_port: int = setting(0, "port of the Prometheus /metrics page (0: any free port, -1: none)")
    health_port: int = setting(
        -1,
        "also answer grpc.health.v1 alone, in plaintext, here: for probes that cannot speak TLS (-1: none)",
    )
    log_format: str = setting("json", "log lines as JSON or as text", ["json", "text"])
    max_connection_age_s: float = setting(
        30.0,
        "age at which a caller's connection is asked to close (GOAWAY; calls on it still finish), so that "
        "callers reconnect and reach replicas added since (0: never)",
    )

    def check_serving(self) -> None:
        """ValueError naming a port that is none, or a duration that is no number of seconds."""
        require_ports(self, ["port"])
        require_ports(self, ["metrics_port", "health_port"], none=-1)
        require_seconds(self, ["shutdown_grace_s", "max_connection_age_s"], zero_allowed=True)
        require_at_most(self, ["max_connection_age_s"], _FOREVER_MS // 1000)


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# gRPC shares a port that another server holds by default (SO_REUSEPORT): a second service on the same port
# would start and take half of the calls. Without it, the second one fails to bind and says so.
_EXCLUSIVE_PORT = [("grpc.so_reuseport", 0)]
_FOREVER_MS = 2**31 - 1  # gRPC reads INT_MAX milliseconds as no limit


def _connection_age(max_age_s: float) -> list[tuple[str, int]]:
    """Server options that end each connection after `max_age_s` (0: never), give or take gRPC's 10% jitter.

    The server then sends GOAWAY: callers open new connections for new calls, and callers that look the
    service up in DNS (round robin over `dns:///encoder:50051`) look again and find replicas added since;
    behind a TCP load balancer the new connection may go to a new replica. Calls already on the old
    connection run to their end however long (an Ingest stream, a health Watch): without an unlimited grace,
    gRPC would cut them off after it.
    """
    if max_age_s == 0:
        return []
    return [
        ("grpc.max_connection_age_ms", math.ceil(max_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", _FOREVER_MS),
    ]


class _Health(health.HealthServicer):
    """The standard health service, for a fixed set of service names: watching any other name is NOT_FOUND, as
    checking it is. The standard one keeps every name it was asked to watch, for good (grpc/grpc#43403): a
    caller with no token could fill the memory with names as long as the message limit."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(
            experimental_non_blocking=True,
            experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"),
        )
        self.names = frozenset(names)

    def Watch(self, request, context, send_response_callback=None):  # type: ignore[no-untyped-def]
        if request.service not in self.names:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no service named {request.service[:200]!r} here")
        return super().Watch(request, context, send_response_callback)


def _bind(
    server: grpc.Server, host: str, port: int, flag: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    """The port `server` listens on at host:port; OSError naming `--host` when that is not this machine's,
    or the port's flag when another process holds it."""
    require_listenable(host, port, flag)
    address = f"{host}:{port}"
    try:
        bound = (
            server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        )
    except RuntimeError:
        bound = 0
    if bound == 0:  # taken between the probe and gRPC's own bind
        raise OSError(f"cannot listen on {address} ({flag}): another process holds that port")
    return bound


class GrpcServer:
    """A started gRPC server as `settings` describe it, serving `service_name` (`register` adds it), whose
    services are NOT_SERVING until `set_serving(True)`.

    Every call is counted, timed and logged (metrics on `--metrics-port`, 0: any free port, -1: none) and,
    when `--auth-tokens` are given, must carry one of them as a bearer token. With `--tls-cert` it speaks
    TLS; `--health-port` (-1: none) then lets probes that cannot, such as Kubernetes' gRPC probes, reach the
    same health statuses in plaintext, and nothing else. Each caller's connection is asked to close after
    `--max-connection-age-s` (0: never), for callers to spread over replicas added since.
    """

    def __init__(
        self,
        settings: ServerSettings,
        service_name: str,
        register: Callable[[grpc.Server], None],
        max_message_bytes: int,
        registry: CollectorRegistry,
    ) -> None:
        host, metrics_port, health_port = settings.host, settings.metrics_port, settings.health_port
        auth_tokens = bearer_tokens(settings.auth_tokens)
        credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_ca)
        self.service_names = [service_name]
        authentication = [BearerTokenInterceptor(auth_tokens)] if auth_tokens else []
        interceptors = [
            ObservabilityInterceptor(registry, self.service_names),
            *authentication,
            ServiceErrorInterceptor(),
        ]
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.grpc_workers, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                *_EXCLUSIVE_PORT,
                *PINGS_ACCEPTED,
                *_connection_age(settings.max_connection_age_s),
            ],
            interceptors=interceptors,
        )
        register(self._server)
        # Watch streams get threads of their own; a Check waits for a worker like any call, so probes that
        # must answer while every worker is busy ask --health-port, a server with its own threads.
        self.health = _Health(["", *self.service_names])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )
        self.port = _bind(self._server, host, settings.port, "--port", credentials)
        self.address = f"{host}:{self.port}"
        self.metrics = None
        if metrics_port >= 0:
            require_listenable(host, metrics_port, "--metrics-port")
            try:
                self.metrics = serve_metrics(registry, host, metrics_port)
            except OSError as error:  # taken between the probe and the bind
                raise OSError(f"cannot listen on {host}:{metrics_port} (--metrics-port): {error}") from None
            log.info("metrics on http://%s:%d/metrics", host, self.metrics.server_port)
        self._health_server, self.health_address = (
            self._serve_health_alone(host, health_port) if health_port >= 0 else (None, None)
        )
        self.set_serving(False)
        self._server.start()

    def _serve_health_alone(self, host: str, port: int) -> tuple[grpc.Server, str]:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health-port"),
            options=_EXCLUSIVE_PORT,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        bound = _bind(server, host, port, "--health-port")
        server.start()
        log.info("health checks alone, in plaintext, on %s:%d", host, bound)
        return server, f"{host}:{bound}"

    def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for name in ["", *self.service_names]:
            self.health.set(name, status)

    def stop(self, grace_s: float) -> None:
        """Refuses new calls, lets in-flight calls finish for up to `grace_s`, then stops. Health is
        NOT_SERVING from then on, whatever sets it: a health check in flight must not undo it mid-drain."""
        self.health.enter_graceful_shutdown()
        self._server.stop(grace_s).wait()
        if self._health_server is not None:
            self._health_server.stop(None)
        if self.metrics is not None:
            self.metrics.shutdown()
            self.metrics.server_close()


@contextmanager
def reported_startup(program: str) -> Iterator[None]:
    """Ends the process with one line naming what stopped it from starting (a port in use, a model that
    cannot be read or downloaded, a device that is not there, an unreachable store) instead of a traceback."""
    try:
        yield
    except ServiceError as error:
        sys.exit(f"{program}: {error.message}")
    except (OSError, ValueError) as error:
        sys.exit(f"{program}: {error}")


def run_until_signalled(server: GrpcServer, shutdown: Callable[[], None]) -> None:
    """Blocks until SIGTERM or SIGINT, then calls `shutdown` (which drains in-flight calls)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    stop.wait()
    log.info("signal received: draining in-flight calls on %s", server.address)
    shutdown()
    log.info("stopped")

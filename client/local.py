"""Running an encoder and a search service on this machine, as child processes, until told to stop."""

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagesearch.defaults import ENCODER_METRICS_PORT, ENCODER_PORT, SEARCH_METRICS_PORT, SEARCH_PORT


class StartFailed(Exception):
    """A service that could not be started; the message says which, and where its log is."""


def free_port() -> int:
    """A port nothing listens on now, for a service started next."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def chosen_port(port: int) -> int:
    """`port`, or a free one when it is 0 (any free port); -1 (none) stays as it is."""
    return free_port() if port == 0 else port


@dataclass(frozen=True)
class LocalServices:
    encoder: str
    search: str
    metrics_ports: tuple[int, int]
    children: dict[str, subprocess.Popen[bytes]]

    def wait_for_exit(self, stop: threading.Event) -> tuple[str, int] | None:
        """Blocks until `stop` is set (None) or a child exits: then its name and exit code."""
        while not stop.wait(0.2):
            for name, process in self.children.items():
                if process.poll() is not None:
                    return name, process.returncode
        return None


def wait_until_serving(address: str, name: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Follows the service's health status until it is SERVING; fails if the process dies first."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise StartFailed(
                    f"the {name} exited with code {process.returncode} while starting (its log says why)"
                )
            try:
                # Watch is missing from types-grpcio-health-checking.
                updates = health.Watch(  # type: ignore[attr-defined]
                    health_pb2.HealthCheckRequest(), timeout=1.0, wait_for_ready=True
                )
                for update in updates:
                    if update.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise StartFailed(f"the {name} at {address}: {error.details()}") from None
    raise StartFailed(f"the {name} at {address} did not start in {timeout_s} s")


@contextmanager
def _child(args: list[str], log: IO[str] | None) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, *args], stderr=log, stdout=log)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)  # graceful: in-flight calls finish
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def local_services(
    model: str,
    milvus_uri: str,
    device: str = "auto",
    encoder_port: int = ENCODER_PORT,
    search_port: int = SEARCH_PORT,
    log: IO[str] | None = None,
    start_timeout_s: float = 900.0,
    metrics_ports: tuple[int, int] = (ENCODER_METRICS_PORT, SEARCH_METRICS_PORT),
) -> Iterator[LocalServices]:
    """Starts both services (the encoder first), waits until each is SERVING, and stops both at the end.
    A port of 0 is any free one; -1 for a metrics port turns that page off."""
    encoder_port, search_port = chosen_port(encoder_port), chosen_port(search_port)
    metrics_ports = (chosen_port(metrics_ports[0]), chosen_port(metrics_ports[1]))
    encoder = f"127.0.0.1:{encoder_port}"
    search = f"127.0.0.1:{search_port}"
    with ExitStack() as stack:
        encoder_args = ["-m", "encoder_service", "--model", model, "--device", device]
        encoder_args += ["--port", str(encoder_port), "--metrics-port", str(metrics_ports[0])]
        encoder_process = stack.enter_context(_child(encoder_args, log))
        wait_until_serving(encoder, "encoder service", encoder_process, start_timeout_s)
        search_args = ["-m", "search_service", "--encoder", encoder, "--milvus-uri", milvus_uri]
        search_args += ["--port", str(search_port), "--metrics-port", str(metrics_ports[1])]
        search_process = stack.enter_context(_child(search_args, log))
        wait_until_serving(search, "search service", search_process, start_timeout_s)
        children = {"encoder service": encoder_process, "search service": search_process}
        yield LocalServices(encoder, search, metrics_ports, children)

"""Running an encoder, a search service and the search page on this machine, as child processes."""

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .errors import ImageSearchError


def free_port() -> int:
    """A port nothing listens on now, for a service started next."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class LocalServices:
    encoder: str
    search: str
    metrics_ports: tuple[int, int]
    web: str = ""  # the search page's URL, when it runs


def wait_until_page_answers(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Asks the web tier's /healthz until it answers; fails if the process dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ImageSearchError(
                grpc.StatusCode.UNAVAILABLE,
                f"the search page exited with code {process.returncode} while starting",
            )
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1.0):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise ImageSearchError(
        grpc.StatusCode.DEADLINE_EXCEEDED, f"the search page at {url} did not start in {timeout_s} s"
    )


def wait_until_serving(address: str, name: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Follows the service's health status until it is SERVING; fails if the process dies first."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ImageSearchError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the {name} exited with code {process.returncode} while starting",
                )
            try:
                for update in health.Watch(health_pb2.HealthCheckRequest(), timeout=1.0, wait_for_ready=True):
                    if update.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise ImageSearchError(
                        error.code(), f"the {name} at {address}: {error.details()}"
                    ) from None
    raise ImageSearchError(
        grpc.StatusCode.DEADLINE_EXCEEDED, f"the {name} at {address} did not start in {timeout_s} s"
    )


@contextmanager
def _child(args: list[str], log: IO[str] | None) -> Iterator[subprocess.Popen]:
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
    encoder_port: int = 50051,
    search_port: int = 50052,
    log: IO[str] | None = None,
    start_timeout_s: float = 900.0,
    metrics_ports: tuple[int, int] = (9151, 9152),
    web_port: int | None = None,
    web_collection: str = "",
) -> Iterator[LocalServices]:
    """Starts both services (the encoder first), waits until each is SERVING, and stops both at the end.

    With a `web_port`, the search page too (searching `web_collection`, empty: the service's default)."""
    encoder = f"127.0.0.1:{encoder_port}"
    search = f"127.0.0.1:{search_port}"
    with ExitStack() as stack:
        encoder_args = [
            "-m",
            "encoder_service",
            "--model",
            model,
            "--device",
            device,
            "--port",
            str(encoder_port),
        ]
        encoder_process = stack.enter_context(_child(encoder_args, log))
        wait_until_serving(encoder, "encoder service", encoder_process, start_timeout_s)
        search_args = ["-m", "search_service", "--encoder", encoder, "--milvus-uri", milvus_uri]
        search_args += ["--port", str(search_port), "--metrics-port", str(metrics_ports[1])]
        search_process = stack.enter_context(_child(search_args, log))
        wait_until_serving(search, "search service", search_process, start_timeout_s)
        web = ""
        if web_port is not None:
            web = f"http://127.0.0.1:{web_port}"
            web_args = [
                "-m",
                "web",
                "--search",
                search,
                "--port",
                str(web_port),
                "--collection",
                web_collection,
            ]
            web_process = stack.enter_context(_child(web_args, log))
            wait_until_page_answers(web, web_process, start_timeout_s)
        yield LocalServices(encoder, search, metrics_ports, web)

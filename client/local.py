"""Running an encoder and a search service on this machine, as child processes, until told to stop."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagesearch.ports import require_listenable

# How long a service may take to say SERVING: the encoder's first start downloads ViT-B/32 (about 340 MB).
START_TIMEOUT_S = 900.0


class StartFailed(Exception):
    """A service that could not be started; the message says which, and where its log is."""


def free_port() -> int:
    """A port nothing listens on now, for a service started next."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def chosen_port(port: int, flag: str) -> int:
    """`port` once it is known to be free, or a free one when it is 0; -1 (none) stays as it is.

    A service refuses a taken port, but only once it is up: meanwhile, whoever holds the port would answer
    the questions that tell whether it started."""
    if port <= 0:
        return free_port() if port == 0 else port
    try:
        require_listenable("127.0.0.1", port, flag)
    except OSError as error:
        raise StartFailed(str(error)) from None
    return port


@dataclass(frozen=True)
class LocalServices:
    encoder: str
    search: str
    metrics_ports: tuple[int, int]
    children: dict[str, subprocess.Popen[bytes]]
    web: str  # the search page's address ("" when it was not started)

    def wait_for_exit(self, stop: threading.Event) -> tuple[str, int] | None:
        """Blocks until `stop` is set (None) or a child exits: then its name and exit code."""
        while not stop.wait(0.2):
            for name, process in self.children.items():
                if process.poll() is not None:
                    return name, process.returncode
        return None


def _wait_until(
    ready: Callable[[], bool],
    what: str,
    process: subprocess.Popen[bytes],
    timeout_s: float,
    log: IO[str] | None,
) -> None:
    """Asks `ready` until it says yes; StartFailed if the process (`python -m module …`) exits first, saying
    why, or if time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        try:
            code = process.wait(timeout=0.1)  # between two questions, see whether it died
        except subprocess.TimeoutExpired:
            continue
        raise StartFailed(f"the {what} exited with code {code} while starting: {_why(log, process)}")
    raise StartFailed(f"the {what} did not start in {timeout_s} s")


def _why(log: IO[str] | None, process: subprocess.Popen[bytes]) -> str:
    """The line a service that cannot start ends with (`search_service: MILVUS_URI=…`), from the log file
    the services share; otherwise where to look."""
    if log is None:
        return "its log above says why"
    args = [str(arg) for arg in process.args] if isinstance(process.args, list) else []
    module = args[args.index("-m") + 1] if "-m" in args else ""
    with open(log.name, encoding="utf-8", errors="replace") as written:
        said = [line.strip() for line in written if line.startswith(f"{module}: ")]
    return said[-1].removeprefix(f"{module}: ") if said else f"its log {log.name} says why"


def _serving(address: str) -> Callable[[], bool]:
    def ask() -> bool:
        with grpc.insecure_channel(address) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1.0, wait_for_ready=True
                )
            except grpc.RpcError:
                return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    return ask


def _answering(url: str) -> Callable[[], bool]:
    def ask() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1.0):
                return True
        except OSError:  # URLError is one
            return False

    return ask


# A child's first step on Linux, in its own interpreter: the kernel is to send it SIGTERM when the thread that
# started it ends, however that ends (SIGKILL included), so that no service outlives the `imgsearch up` that
# started it; then it becomes the service, and exec keeps that setting. Not a `preexec_fn`: that forks this
# process with its gRPC threads and runs gRPC's fork handlers, which can hang (grpc/grpc#37259).
_END_WITH_PARENT = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG, from <linux/prctl.h>
if os.getppid() != int(sys.argv[1]):  # the parent ended before the line above
    sys.exit(1)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def _command(args: list[str]) -> list[str]:
    """The command line that runs `python args` as a child that ends with this process (on Linux)."""
    if not sys.platform.startswith("linux"):
        return [sys.executable, *args]
    return [sys.executable, "-c", _END_WITH_PARENT, str(os.getpid()), *args]


@contextmanager
def _child(args: list[str], log: IO[str] | None) -> Iterator[subprocess.Popen[bytes]]:
    # A session of its own: Ctrl-C in a terminal reaches only this process, which stops its services in
    # order (the page, then the search service, which drains, then the encoder), where each child and its own
    # children (Milvus Lite) ended at once.
    process = subprocess.Popen(_command(args), stderr=log, stdout=log, start_new_session=True)
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
    device: str,
    encoder_port: int,
    search_port: int,
    log: IO[str] | None = None,
    *,
    metrics_ports: tuple[int, int],
    web_port: int | None = None,
    web_collection: str = "",
) -> Iterator[LocalServices]:
    """Starts both services (the encoder first), waits until each is SERVING, and stops both at the end;
    with a `web_port`, the search page too (searching `web_collection`, empty: the service's default).
    A port of 0 is any free one; -1 for a metrics port turns that page off."""
    encoder_port, search_port = (
        chosen_port(encoder_port, "--encoder-port"),
        chosen_port(search_port, "--server-port"),
    )
    metrics_ports = (
        chosen_port(metrics_ports[0], "--encoder-metrics-port"),
        chosen_port(metrics_ports[1], "--search-metrics-port"),
    )
    web_port = None if web_port is None else chosen_port(web_port, "--web-port")
    encoder = f"127.0.0.1:{encoder_port}"
    search = f"127.0.0.1:{search_port}"
    with ExitStack() as stack:
        encoder_args = ["-m", "encoder_service", "--model", model, "--device", device]
        encoder_args += ["--port", str(encoder_port), "--metrics-port", str(metrics_ports[0])]
        encoder_process = stack.enter_context(_child(encoder_args, log))
        _wait_until(_serving(encoder), f"encoder service at {encoder}", encoder_process, START_TIMEOUT_S, log)
        search_args = ["-m", "search_service", "--encoder", encoder, "--milvus-uri", milvus_uri]
        search_args += ["--port", str(search_port), "--metrics-port", str(metrics_ports[1])]
        search_process = stack.enter_context(_child(search_args, log))
        _wait_until(_serving(search), f"search service at {search}", search_process, START_TIMEOUT_S, log)
        children = {"encoder service": encoder_process, "search service": search_process}
        web = ""
        if web_port is not None:
            web = f"http://127.0.0.1:{web_port}"
            web_args = ["-m", "web", "--search", search, "--port", str(web_port)]
            web_process = stack.enter_context(_child([*web_args, "--collection", web_collection], log))
            _wait_until(_answering(web), f"search page at {web}", web_process, START_TIMEOUT_S, log)
            children["search page"] = web_process
        yield LocalServices(encoder, search, metrics_ports, children, web)

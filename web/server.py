"""The web tier on uvicorn, on a socket bound up front so that port 0 gives a known free port."""

import logging
import socket
import threading
import time

import uvicorn

from imagesearch.ports import require_listenable

from .app import create_app
from .config import WebConfig

log = logging.getLogger(__name__)


class WebServer:
    def __init__(self, config: WebConfig) -> None:
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        require_listenable(config.host, config.port, "--port")  # named as the services name it
        self.socket = socket.create_server((config.host, config.port), family=family)
        port = self.socket.getsockname()[1]
        host = f"[{config.host}]" if family == socket.AF_INET6 else config.host
        self.url = f"http://{host}:{port}"
        self.search = config.search
        # Logging as the process set it up (python -m web: JSON on stderr); the app writes the access log.
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(config),
                log_level=config.log_level,
                lifespan="on",
                log_config=None,
                access_log=False,
            )
        )
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Serves until SIGINT or SIGTERM, then lets open requests finish."""
        log.info("search page on %s/ (search service at %s)", self.url, self.search)
        self.server.run(sockets=[self.socket])

    def start(self, timeout_s: float = 30.0) -> str:
        """Serves from a thread (for tests and embedding) once it accepts requests; returns the URL."""
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the web tier did not start on {self.url}")
            time.sleep(0.01)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self.socket.close()

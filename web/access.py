"""One access-log line per request, of bounded size, with the request's id: the X-Request-ID a proxy in front
sent, if it is a safe one (as the services keep it), else a fresh one. The id is also sent to the search
service as x-request-id by every SDK call the request makes (its own log lines of the call carry it) and back
to the browser in x-request-id."""

import logging
import time
from urllib.parse import quote

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from client import request_id as chosen_request_id
from imagesearch.calls import request_id_of
from imagesearch.headers import REQUEST_ID

log = logging.getLogger("web.access")
MAX_CHARS = 200  # of the method and of the path as logged


def bounded(text: str) -> str:
    """`text` percent-encoded (no control character reaches a log line) and cut at MAX_CHARS."""
    quoted = quote(text, safe="/:@!$&'()*+,;=~")
    return quoted if len(quoted) <= MAX_CHARS else quoted[:MAX_CHARS] + "..."


class AccessLog:
    """Logs each request's method, path, query string length (its text: users' searches), status, time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(Headers(scope=scope))
        scope.setdefault("state", {})["request_id"] = request_id  # for the log lines of its failures
        status = 500  # what uvicorn answers for an app that fails before it answers
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID, request_id)
            await send(message)

        try:
            with chosen_request_id(request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            method, path = bounded(scope["method"]), bounded(scope["path"])
            fields = {
                "method": method,
                "path": path,
                "query_bytes": len(scope["query_string"]),
                "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 1),
                "request_id": request_id,
            }
            log.info("%s %s %s", method, path, status, extra={"fields": fields})

"""The Host header check, against DNS rebinding: a page on another site can point its own name at 127.0.0.1
and then read this tier's answers as its own origin. Its requests carry its name in Host, which this page
never answers to unless --allowed-hosts names it."""

import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

# Always allowed: a browser sends these only to a page it opened on this machine, never to another site's.
LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
ANY = "*"
# Answered whatever the Host: it says only that the process runs, and probes ask by address (the kubelet's
# Host is the pod's IP).
UNCHECKED_PATHS = frozenset({"/healthz"})

_NAME = r"\[[0-9a-f:.]+\]|[^\[\]:/@\s,*]+"  # an IPv6 address in brackets, or a name or IPv4 address
_HOST = re.compile(rf"(?P<name>{_NAME})(?::[0-9]*)?")  # a Host header: the name and any port


def allowed_hosts(setting: str) -> frozenset[str]:
    """The names of a comma-separated --allowed-hosts (IPv6 addresses with or without brackets) and the
    loopback ones; ValueError naming one that is no host name."""
    names = set(LOOPBACK)
    for written in filter(None, (part.strip().lower() for part in setting.split(","))):
        name = f"[{written}]" if ":" in written and not written.startswith("[") else written
        if name != ANY and not re.fullmatch(_NAME, name):
            raise ValueError(f"allowed_hosts: {written!r} is not a host name or address (no port, no scheme)")
        names.add(name)
    return frozenset(names)


class AllowedHosts:
    """Answers 400 to a request whose Host header names none of `names` (ANY among them: every Host)."""

    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app = app
        self.names = names

    def refused(self, scope: Scope) -> str | None:
        """The Host header of a request this page does not answer to ("" when there is none), else None."""
        if scope["type"] != "http" or scope["path"] in UNCHECKED_PATHS or ANY in self.names:
            return None
        host = Headers(scope=scope).get("host", "")
        match = _HOST.fullmatch(host.lower())
        return None if match is not None and match["name"] in self.names else host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = self.refused(scope)
        if host is None:
            await self.app(scope, receive, send)
            return
        refusal = f"the host {host!r} is not allowed: add it to --allowed-hosts (WEB_ALLOWED_HOSTS)"
        await error_response(400, refusal)(scope, receive, send)

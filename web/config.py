"""The web tier's settings, from flags with environment-variable twins (WEB_*)."""

from dataclasses import dataclass

from imagesearch.defaults import SEARCH_ADDRESS, WEB_PORT
from imagesearch.flags import parse_config, require_at_least, require_ports, require_seconds, setting
from imagesearch.headers import unsendable

from .hosts import allowed_hosts


@dataclass(frozen=True)
class WebConfig:
    host: str = setting("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = setting(WEB_PORT, "port to listen on (0: any free port)")
    allowed_hosts: str = setting(
        "",
        "comma-separated names (or addresses) the page is reached by, besides localhost, 127.0.0.1 and [::1] "
        "(*: any); a request naming another in its Host header gets 400, against DNS rebinding",
    )
    search: str = setting(SEARCH_ADDRESS, "the search service: HOST:PORT or any gRPC target")
    collection: str = setting("", "the collection to search (empty: the search service's default)")
    search_token: str = setting("", "bearer token sent to the search service (the SDK's token=)")
    search_tls_ca: str = setting(
        "", "PEM CA that verifies the search service's certificate (turns on TLS to it)"
    )
    search_tls_cert: str = setting("", "PEM client certificate shown to the search service (mutual TLS)")
    search_tls_key: str = setting("", "PEM private key of that client certificate")
    timeout_s: float = setting(30.0, "deadline of one call to the search service")
    max_upload_bytes: int = setting(
        20 * 1024 * 1024, "largest picture a search by picture may upload (larger: 413)"
    )
    upload_timeout_s: float = setting(30.0, "longest an uploaded picture may take to arrive (slower: 408)")
    max_concurrent_uploads: int = setting(
        16, "searches by uploaded picture at once (more: 503), so uploads hold at most this many pictures"
    )
    page_size: int = setting(24, "hits per page when a search names no top_k")
    log_level: str = setting(
        "info", "log level (info: a line per request)", ["critical", "error", "warning", "info", "debug"]
    )
    log_format: str = setting("json", "log lines as JSON or as text", ["json", "text"])

    def __post_init__(self) -> None:
        if why := unsendable(self.search_token, "search_token"):
            raise ValueError(why)
        require_at_least(self, ["max_upload_bytes", "page_size", "max_concurrent_uploads"])
        require_seconds(self, ["timeout_s", "upload_timeout_s"])
        require_ports(self, ["port"])
        allowed_hosts(self.allowed_hosts)


def parse_args(argv: list[str] | None = None) -> WebConfig:
    return parse_config(
        WebConfig,
        "python -m web",
        "The search page and its JSON API (read-only), in front of the search service.",
        "WEB_",
        argv,
    )

"""`python -m web`: see --help."""

from imagesearch.observability import configure_logging
from imagesearch.serving import reported_startup

from .config import parse_args
from .server import WebServer


def main() -> None:
    config = parse_args()
    configure_logging(config.log_format, config.log_level.upper())
    with reported_startup("web"):
        server = WebServer(config)
    server.run()


if __name__ == "__main__":
    main()

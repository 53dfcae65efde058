"""`python -m web`: see --help."""

from imagesearch.observability import configure_logging

from .config import parse_args
from .server import WebServer


def main() -> None:
    config = parse_args()
    configure_logging(config.log_format, config.log_level.upper())
    WebServer(config).run()


if __name__ == "__main__":
    main()

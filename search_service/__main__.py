"""`python -m search_service`: see --help."""

import sys

from imagesearch.errors import ServiceError
from imagesearch.observability import configure_logging
from imagesearch.serving import run_until_signalled

from .config import parse_args
from .server import SearchServer


def main() -> None:
    config = parse_args()
    configure_logging(config.log_format)
    try:
        server = SearchServer(config)
    except ServiceError as error:
        sys.exit(f"search_service: {error.message}")
    server.start()
    assert server.grpc is not None
    run_until_signalled(server.grpc, server.stop)


if __name__ == "__main__":
    main()

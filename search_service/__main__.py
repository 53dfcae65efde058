"""`python -m search_service`: see --help."""

from imagesearch.observability import configure_logging
from imagesearch.serving import reported_startup, run_until_signalled

from .config import parse_args
from .server import SearchServer


def main() -> None:
    config = parse_args()
    configure_logging(config.log_format)
    with reported_startup("search_service"):
        server = SearchServer(config)
        server.start()
    assert server.grpc is not None
    run_until_signalled(server.grpc, server.stop)


if __name__ == "__main__":
    main()

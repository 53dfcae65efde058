"""`python -m encoder_service`: see --help."""

from imagesearch.observability import configure_logging
from imagesearch.serving import reported_startup, run_until_signalled

from .config import parse_args
from .server import EncoderServer


def main() -> None:
    config = parse_args()
    configure_logging(config.log_format)
    with reported_startup("encoder_service"):
        server = EncoderServer(config)
        server.start()
        server.load()
    assert server.grpc is not None
    run_until_signalled(server.grpc, server.stop)


if __name__ == "__main__":
    main()

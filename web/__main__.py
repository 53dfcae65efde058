"""`python -m web`: see --help."""

import logging

from .config import parse_args
from .server import WebServer


def main() -> None:
    config = parse_args()
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    WebServer(config).run()


if __name__ == "__main__":
    main()

"""`python -m search_service`: see --help."""

import os
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit

from imagesearch.observability import configure_logging
from imagesearch.serving import reported_startup, run_until_signalled

from .config import SearchConfig, parse_args, shown_uri

# The first version's names of three settings (pymilvus reads the first itself). A deployment made for that
# version still sets them; ignored, its service ran on the defaults: a new Milvus Lite file, healthy, empty.
_FIRST_VERSION_NAMES = {
    "MILVUS_URI": "milvus_uri",
    "MILVUS_TOKEN": "milvus_token",
    "MILVUS_TIMEOUT_S": "milvus_timeout_s",
}


def pymilvus_takes(uri: str) -> bool:
    """Whether importing pymilvus survives MILVUS_URI=`uri`: it parses the variable itself, on import, and
    raises unless it is empty or a URL with a host part and a port below 65535 (orm/connections.py)."""
    try:
        parsed = urlsplit(uri)
        port = parsed.port  # ValueError for a port that is no number, or above 65535, as in pymilvus
    except ValueError:
        return False
    return not uri or (bool(parsed.netloc) and (port is None or port < 65535))


def first_version_setting(config: SearchConfig, environment: Mapping[str, str]) -> str:
    """Why the service must not start: a first version's variable set while the setting that replaced it was
    left at its default (neither the flag nor SEARCH_* names it); or "". Where the new setting is given, the
    old variable is pymilvus's business (`imgsearch up` passes --milvus-uri, whatever the shell exports)."""
    defaults = SearchConfig()
    for name, field in _FIRST_VERSION_NAMES.items():
        given = environment.get(name, "")
        if given and getattr(config, field) == getattr(defaults, field):
            shown = "***" if field == "milvus_token" else shown_uri(given)
            flag = f"--{field.replace('_', '-')}"
            return (
                f"{name}={shown} is the first version's name for {flag}, which this version reads as {flag} "
                f"or SEARCH_{name} (left at its default here): set one of those (or unset {name})"
            )
    return ""


def main() -> None:
    uri = os.environ.get("MILVUS_URI", "")
    if not pymilvus_takes(uri):
        print(
            f"search_service: MILVUS_URI={shown_uri(uri)}: pymilvus reads MILVUS_URI itself and takes only "
            "a URL (http://host:19530); name a Milvus Lite file with --milvus-uri or SEARCH_MILVUS_URI",
            file=sys.stderr,
        )
        sys.exit(2)
    # pymilvus also loads a .env file from any folder above its own into the environment, a checkout's .env
    # for docker compose included: settings this process never named, and a MILVUS_URI checked by no one.
    os.environ["PYTHON_DOTENV_DISABLED"] = "1"
    from .server import SearchServer  # only now: importing it imports pymilvus

    config = parse_args()
    if why := first_version_setting(config, os.environ):
        print(f"search_service: {why}", file=sys.stderr)
        sys.exit(2)
    configure_logging(config.log_format)
    with reported_startup("search_service"):
        server = SearchServer(config)
        server.start()
    assert server.grpc is not None
    run_until_signalled(server.grpc, server.stop)


if __name__ == "__main__":
    main()

"""`imgsearch`: the command line of the product. See `imgsearch --help`.

Every failure is one message on stderr and an exit code, never a traceback. Packages above the client (the
demo) add their own commands through the `imgsearch.commands` entry point group.
"""

from __future__ import annotations  # argparse's sub-parser type is generic to type checkers only

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

import grpc

from imagesearch.defaults import (
    DEFAULT_MODEL,
    ENCODER_ADDRESS,
    ENCODER_METRICS_PORT,
    ENCODER_PORT,
    LONGEST_SECONDS,
    SEARCH_ADDRESS,
    SEARCH_METRICS_PORT,
    SEARCH_PORT,
    WEB_PORT,
)
from imagesearch.ports import is_port

from .channel import DEFAULT_TIMEOUT_S
from .commands import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_READER_GONE,
    EXIT_USAGE,
    UsageError,
    cmd_delete,
    cmd_encode,
    cmd_get,
    cmd_ingest,
    cmd_search,
    cmd_stats,
    cmd_up,
    tls_on,
)
from .errors import ImageSearchError
from .local import StartFailed
from .models import QueryPart
from .output import shown

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "build_parser", "main"]

EPILOG = """exit codes:
  0  all done
  1  failed (the message says why and what to do)
  2  usage error, or a request refused for its arguments before it was sent
  3  some items failed, the rest were done (ingest, get, delete --id; 1 when every item failed)
  130  Ctrl-C (`up` and `demo --web`, which run until it, end 0)
  141  the reader of the output stopped reading (`| head`)

environment: IMGSEARCH_SERVER, IMGSEARCH_ENCODER, IMGSEARCH_COLLECTION, IMGSEARCH_TOKEN,
  IMGSEARCH_TLS, IMGSEARCH_TLS_CA, IMGSEARCH_TLS_CERT, IMGSEARCH_TLS_KEY"""
SEARCH_EPILOG = """a query is one or more parts, added up by weight (negative: away from it):
  imgsearch search "a white dog"                          a text
  imgsearch search --image rex.jpg                        a picture
  imgsearch search --like 3f2a...e9                       more like a stored picture (its id)
  imgsearch search "a dog on a beach" --text people -0.5  a text, minus another
  imgsearch search --like 3f2a...e9 --text "in the snow" 2 --image cat.jpg -1
each --text, --image and --like may repeat and takes an optional WEIGHT (default 1)."""


def _seconds(text: str) -> float:
    """--timeout: a positive number of seconds, at most LONGEST_SECONDS."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= LONGEST_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive number of seconds, at most {LONGEST_SECONDS:g}"
        )
    return seconds


def _port(text: str, none: int | None) -> int:
    """`text` as a port (the services' own rule), or `none`; a usage error otherwise."""
    if not (re.fullmatch(r"-?[0-9]+", text) and is_port(int(text), none)):
        off = "" if none is None else f", or {none}: none"
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1 to 65535, 0: any free one{off})")
    return int(text)


def port_argument(text: str) -> int:
    """A port to listen on: 1 to 65535, or 0 for any free one."""
    return _port(text, none=None)


def metrics_port_argument(text: str) -> int:
    """A metrics page's port, or -1: none."""
    return _port(text, none=-1)


class AddQueryPart(argparse.Action):
    """--text / --image / --like VALUE [WEIGHT]: one more QueryPart in `parts`, of the kind in `const`."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        value, *weight = [str(item) for item in values or []]
        if len(weight) > 1:
            named = self.metavar[0] if isinstance(self.metavar, tuple) else self.metavar
            parser.error(f"{option_string} takes {named} and an optional WEIGHT, not {values}")
        try:
            number = float(weight[0]) if weight else 1.0
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            parser.error(f"{option_string} {value}: WEIGHT {weight[0]!r} is not a finite number")
        part = QueryPart(**{self.const: value}, weight=number)
        setattr(namespace, self.dest, [*getattr(namespace, self.dest), part])


def _add_filter_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--filter", help="a Milvus filter, e.g. 'metadata[\"album\"] == {album}'")
    command.add_argument(
        "--param", action="append", default=[], metavar="NAME=TEXT", help="a text parameter of the filter"
    )
    command.add_argument(
        "--param-json",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a typed parameter: a number, true/false, or a list (--param-json years=[2023,2024])",
    )


def _add_up(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`up`: an encoder, a search service and the search page here, until Ctrl-C."""
    up = commands.add_parser(
        "up", help="run an encoder, a search service and the search page here until Ctrl-C"
    )
    up.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="a CLIP model name (downloaded once) or a checkpoint file (default %(default)s)",
    )
    up.add_argument(
        "--milvus-uri",
        default="./milvus.db",
        help="a Milvus Lite file or http://host:19530 (default %(default)s)",
    )
    up.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default %(default)s")
    up.add_argument(
        "--encoder-port",
        type=port_argument,
        default=ENCODER_PORT,
        help="default %(default)s; 0: any free port",
    )
    up.add_argument(
        "--server-port", type=port_argument, default=SEARCH_PORT, help="default %(default)s; 0: any free port"
    )
    up.add_argument(
        "--encoder-metrics-port",
        type=metrics_port_argument,
        default=ENCODER_METRICS_PORT,
        help="default %(default)s; 0: any free port, -1: none",
    )
    up.add_argument(
        "--search-metrics-port",
        type=metrics_port_argument,
        default=SEARCH_METRICS_PORT,
        help="default %(default)s; 0: any free port, -1: none",
    )
    up.add_argument(
        "--web-port",
        type=port_argument,
        default=WEB_PORT,
        help="the search page's port (default %(default)s; 0: any free port)",
    )
    up.set_defaults(run=cmd_up)


def _add_ingest(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`ingest PATH...`: pictures into the collection."""
    ingest = commands.add_parser("ingest", help="store the pictures in files and folders")
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="text metadata for every picture"
    )
    ingest.add_argument(
        "--tag-json",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="typed metadata, so that filters compare numbers as numbers (--tag-json year=2024)",
    )
    ingest.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.add_argument("--json", action="store_true", help="the totals and per-item results as JSON")
    ingest.set_defaults(run=cmd_ingest)


def _add_search(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`search`: a query of weighted parts, its filter, and how the hits are shown."""
    search = commands.add_parser(
        "search",
        help='find pictures by text ("a white dog"), by --image, by --like ID, or by weighted parts',
        epilog=SEARCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    search.add_argument("text", nargs="?", default="")
    for flag, kind, metavar, what in (
        ("--text", "text", "TEXT", "a text"),
        ("--image", "image", "PATH", "find pictures like this one"),
        ("--like", "id", "ID", "more like the stored picture ID (its stored vector, nothing re-encoded)"),
    ):
        search.add_argument(
            flag,
            dest="parts",
            action=AddQueryPart,
            const=kind,
            nargs="+",
            default=[],
            metavar=(metavar, "WEIGHT"),
            help=f"{what}; an optional WEIGHT (default 1; negative: away from it)",
        )
    search.add_argument("--top-k", type=int, default=10, help="how many hits (default %(default)s)")
    search.add_argument(
        "--offset", type=int, default=0, help="skip this many hits (pagination; default %(default)s)"
    )
    search.add_argument("--min-score", type=float, help="leave out hits that score below this (-1..1)")
    _add_filter_arguments(search)
    search.add_argument("--json", action="store_true")
    search.add_argument("--grid", metavar="PNG", help="also write a contact sheet of the hits")
    search.set_defaults(run=cmd_search)


def _add_collection(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`stats`, `get ID...` and `delete`: the collection itself."""
    stats = commands.add_parser("stats", help="how many pictures, which model")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(run=cmd_stats)

    get = commands.add_parser("get", help="the stored records of ids")
    get.add_argument("ids", nargs="+", metavar="ID")
    get.set_defaults(run=cmd_get)

    delete = commands.add_parser("delete", help="delete pictures by id or by filter")
    delete.add_argument("--id", action="extend", nargs="+", default=[], metavar="ID")
    _add_filter_arguments(delete)
    delete.add_argument("--yes", action="store_true", help="do not ask before deleting what a filter matches")
    delete.set_defaults(run=cmd_delete)


def _add_encode(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`encode`: one vector, from the encoder."""
    encode = commands.add_parser("encode", help="the vector of a text or an image")
    encode.add_argument("text", nargs="?", default="")
    encode.add_argument("--image")
    encode.add_argument("--json", action="store_true")
    encode.set_defaults(run=cmd_encode)


def _add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_up(commands)
    _add_ingest(commands)
    _add_search(commands)
    _add_collection(commands)
    _add_encode(commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgsearch",
        description="Text-to-image search: ingest pictures, search them by text or by image.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env = os.environ.get
    parser.add_argument(
        "--server",
        default=env("IMGSEARCH_SERVER", SEARCH_ADDRESS),
        help="search service (default %(default)s)",
    )
    parser.add_argument(
        "--encoder",
        default=env("IMGSEARCH_ENCODER", ENCODER_ADDRESS),
        help="encoder service (default %(default)s)",
    )
    parser.add_argument(
        "--collection", default=env("IMGSEARCH_COLLECTION", ""), help="default: the service's"
    )
    parser.add_argument("--token", default=env("IMGSEARCH_TOKEN", ""), help="bearer token for the services")
    parser.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_TIMEOUT_S, help="seconds per call (default %(default)s)"
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=env("IMGSEARCH_TLS", ""),
        help="connect with TLS (the system's root certificates unless --tls-ca)",
    )
    parser.add_argument(
        "--tls-ca", default=env("IMGSEARCH_TLS_CA", ""), help="PEM CA of the services (with --tls)"
    )
    parser.add_argument(
        "--tls-cert", default=env("IMGSEARCH_TLS_CERT", ""), help="PEM client certificate (mTLS)"
    )
    parser.add_argument("--tls-key", default=env("IMGSEARCH_TLS_KEY", ""), help="PEM client key (mTLS)")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_commands(commands)
    for command in entry_points(group="imgsearch.commands"):
        try:
            add_command = command.load()
        except ModuleNotFoundError as error:
            # The package's metadata names every command, but an image may leave out the package that adds
            # one (the web image has no demo/): the rest of the command line still works there.
            if not f"{command.module}.".startswith(f"{error.name}."):
                raise
            continue
        add_command(commands)
    for command_parser in commands.choices.values():  # a command's usage error shows that command's usage
        command_parser.set_defaults(usage=command_parser)
    return parser


def _say(message: str) -> None:
    """One line on stderr; what it quotes (a file name, a service's words) cannot break it or color it."""
    print(f"imgsearch: {shown(message)}", file=sys.stderr)


def _report(error: ImageSearchError, over_tls: bool) -> int:
    """One message for a failed call, and what to do about it; the exit code."""
    if not error.target:
        _say(error.message)
        return EXIT_USAGE
    if not error.reached:
        _say(str(error))
        if error.went_away:  # it had answered: neither its address nor TLS is wrong
            print(
                f"  once the {error.service} runs again, run the same ingest: "
                "what it stored is not stored twice.",
                file=sys.stderr,
            )
        elif error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            # One side speaking TLS to the other's plaintext fails as nobody listening does.
            tls = "with TLS, as --tls asks" if over_tls else "without TLS (else add --tls)"
            print(
                f"  is the {error.service} running at {error.target}, {tls}? Start one with `imgsearch up`.",
                file=sys.stderr,
            )
    else:
        _say(f"the {error.service} at {error.target} says: {error}")
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        over_tls = tls_on(args.tls)
        code = int(args.run(args))
        sys.stdout.flush()  # here, where a reader gone is caught, not at exit
        return code
    except BrokenPipeError:  # the reader of stdout stopped reading (`| head`): nothing to tell it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # or the flush at exit raises again
        return EXIT_READER_GONE
    except UsageError as error:
        args.usage.error(shown(str(error)))
    except ImageSearchError as error:
        return _report(error, over_tls)
    except UnicodeEncodeError as error:  # an argument with bytes of a file name where text was wanted
        args.usage.error(f"{shown(str(error.object))!r} is not UTF-8 text")
    except (StartFailed, OSError) as error:  # a service that did not start, a grid that cannot be written
        _say(str(error))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say("interrupted (Ctrl-C)")
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

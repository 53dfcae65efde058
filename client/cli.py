"""`imgsearch`: the command line of the product. See `imgsearch --help`."""

import argparse
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from imagesearch.defaults import WEB_PORT
from imagesearch.tls import channel_credentials

from . import protocol
from .errors import ImageSearchError
from .grid import write_grid
from .local import local_services
from .models import Hit, QueryPart
from .sync import EncoderClient, SearchClient

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
EPILOG = """exit codes:
  0  all done
  1  failed (the message says why and what to do)
  2  usage error
  3  some items failed, the rest were done (ingest)

environment: IMGSEARCH_SERVER, IMGSEARCH_ENCODER, IMGSEARCH_COLLECTION, IMGSEARCH_TOKEN,
  IMGSEARCH_TLS, IMGSEARCH_TLS_CA, IMGSEARCH_TLS_CERT, IMGSEARCH_TLS_KEY"""
SEARCH_EPILOG = """a query is one or more parts, added up by weight (negative: away from it):
  imgsearch search "a white dog"                          a text
  imgsearch search --image rex.jpg                        a picture
  imgsearch search --like 3f2a...e9                       more like a stored picture (its id)
  imgsearch search "a dog on a beach" --text people -0.5  a text, minus another
  imgsearch search --like 3f2a...e9 --text "in the snow" 2 --image cat.jpg -1
each --text, --image and --like may repeat and takes an optional WEIGHT (default 1)."""


class UsageError(Exception):
    pass


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
            parser.error(f"{option_string} takes {self.metavar[0]} and an optional WEIGHT, not {values}")
        try:
            number = float(weight[0]) if weight else 1.0
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            parser.error(f"{option_string} {value}: WEIGHT {weight[0]!r} is not a finite number")
        part = QueryPart(**{self.const: value}, weight=number)
        setattr(namespace, self.dest, [*getattr(namespace, self.dest), part])


def describe(part: QueryPart) -> str:
    """A part as a grid's title shows it: `text: a dog`, `image: rex.jpg`, `like: 3f2a9c…`, `(weight 2)`."""
    if part.text is not None:
        what = f"text: {part.text}"
    elif part.image is not None:
        what = f"image: {Path(str(part.image)).name}"
    else:
        what = f"like: {str(part.id)[:12]}…"
    return what if part.weight == 1 else f"{what} (weight {part.weight:g})"


def key_values(pairs: Sequence[str], flag: str, parse: Any = str) -> dict[str, Any]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} takes KEY=VALUE, not {pair!r}")
        try:
            result[key] = parse(value)
        except ValueError as error:
            raise UsageError(f"{flag} {pair!r}: {error}") from None
    return result


def filter_params(args: argparse.Namespace) -> dict[str, Any]:
    return {**key_values(args.param, "--param"), **key_values(args.param_json, "--param-json", json.loads)}


def print_json(value: Any) -> None:
    print(json.dumps(protocol.as_dict(value), indent=2, ensure_ascii=False))


def print_hits(hits: Sequence[Hit]) -> None:
    if not hits:
        print("no hits")
        return
    print(f"{'rank':>4}  {'score':>7}  path")
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank:>4}  {hit.score:7.4f}  {hit.uri}")


def connection_options(args: argparse.Namespace) -> dict[str, Any]:
    credentials = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key) if args.tls else None
    return {"timeout": args.timeout, "token": args.token or None, "credentials": credentials}


def search_client(args: argparse.Namespace) -> SearchClient:
    return SearchClient(args.server, collection=args.collection, **connection_options(args))


def stop_on_signal() -> threading.Event:
    """An event set by Ctrl-C or SIGTERM, so that services started next are stopped in order."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_up(args: argparse.Namespace) -> int:
    stop = stop_on_signal()
    print(
        f"starting the encoder ({args.model} on {args.device}), the search service ({args.milvus_uri}) "
        "and the search page..."
    )
    with local_services(
        args.model, args.milvus_uri, args.device, args.encoder_port, args.server_port, web_port=args.web_port
    ) as services:
        print(f"encoder service: {services.encoder}")
        print(f"search service:  {services.search}")
        print(f"search page:     {services.web}/")
        print(
            f"metrics:         http://127.0.0.1:{services.metrics_ports[0]}/metrics (encoder), "
            f"http://127.0.0.1:{services.metrics_ports[1]}/metrics (search)"
        )
        print("ready; Ctrl-C stops them all")
        stop.wait()
        print("stopping...")
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    metadata = key_values(args.tag, "--tag")
    with search_client(args) as client:
        summary = client.ingest(
            args.paths, metadata, recursive=not args.no_recursive, progress=not args.no_progress
        )
    if args.json:
        print_json(summary)
    else:
        for item in summary.items:
            if item.outcome == "failed":
                print(f"FAILED  {item.uri}: {item.error}")
        print(
            f"stored {summary.stored}, already present {summary.present}, failed {summary.failed}, "
            f"skipped {len(summary.skipped)} (not images)"
        )
    return EXIT_PARTIAL if summary.failed else EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    parts = [QueryPart(text=args.text), *args.parts] if args.text else args.parts
    if not parts:
        raise UsageError("search takes a TEXT or --image PATH, --like ID, --text TEXT (see search --help)")
    with search_client(args) as client:
        hits = client.search(
            parts,
            top_k=args.top_k,
            offset=args.offset,
            filter=args.filter,
            filter_params=filter_params(args),
            min_score=args.min_score,
        )
    if args.json:
        print_json(hits)
    else:
        print_hits(hits)
    if args.grid:
        title = ", ".join(describe(part) for part in parts)
        print(f"grid: {write_grid(hits, args.grid, title)}", file=sys.stderr)
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    with search_client(args) as client:
        stats = client.stats()
    if args.json:
        print_json(stats)
    else:
        print(
            f"collection {stats.collection}: {stats.count} pictures, model {stats.model}, "
            f"{stats.dimension}-d {stats.metric_type}, index {stats.index_type}"
        )
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    with search_client(args) as client:
        print_json(client.get(args.ids))
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    if bool(args.id) == bool(args.filter):
        raise UsageError("delete takes --id ID... or --filter EXPR (one of them)")
    with search_client(args) as client:
        deleted = client.delete(ids=args.id or None, filter=args.filter, filter_params=filter_params(args))
    print(f"deleted {deleted}")
    return EXIT_OK


def cmd_encode(args: argparse.Namespace) -> int:
    if bool(args.text) == bool(args.image):
        raise UsageError("encode takes a TEXT or --image PATH (one of them)")
    with EncoderClient(args.encoder, **connection_options(args)) as client:
        if args.text:
            vector = client.encode_texts([args.text])[0]
        else:
            [result] = client.encode_images([args.image])
            if result.vector is None:
                raise ImageSearchError(grpc.StatusCode.INVALID_ARGUMENT, f"{args.image}: {result.error}")
            vector = result.vector
    if args.json:
        print(json.dumps(vector.tolist()))
    else:
        print(f"{len(vector)}-d vector: [{', '.join(f'{v:.4f}' for v in vector[:6])}, ...]")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoPlan, run_demo, serve_page, synthetic_plan  # only the demo needs synthetic/

    workdir = Path(args.workdir)
    if args.pictures:
        pictures = Path(args.pictures)
        if not args.query or not args.image_query:
            raise UsageError("demo --pictures also needs --query TEXT and --image-query PATH")
        plan = DemoPlan(pictures, args.model or "ViT-B/32", tuple(args.query), Path(args.image_query), False)
    else:
        plan = synthetic_plan(workdir, args.model, args.per_class)
    if args.web:
        return serve_page(workdir, plan, args.web_port, stop_on_signal(), progress=not args.no_progress)
    return run_demo(workdir, plan, args.top_k, progress=not args.no_progress)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgsearch",
        description="Text-to-image search: ingest pictures, search them by text or by image.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env = os.environ.get
    parser.add_argument("--server", default=env("IMGSEARCH_SERVER", "localhost:50052"), help="search service")
    parser.add_argument(
        "--encoder", default=env("IMGSEARCH_ENCODER", "localhost:50051"), help="encoder service"
    )
    parser.add_argument(
        "--collection", default=env("IMGSEARCH_COLLECTION", ""), help="default: the service's"
    )
    parser.add_argument("--token", default=env("IMGSEARCH_TOKEN", ""), help="bearer token for the services")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per call")
    parser.add_argument(
        "--tls", action="store_true", default=bool(env("IMGSEARCH_TLS")), help="connect with TLS"
    )
    parser.add_argument(
        "--tls-ca", default=env("IMGSEARCH_TLS_CA", ""), help="PEM CA of the services (with --tls)"
    )
    parser.add_argument(
        "--tls-cert", default=env("IMGSEARCH_TLS_CERT", ""), help="PEM client certificate (mTLS)"
    )
    parser.add_argument("--tls-key", default=env("IMGSEARCH_TLS_KEY", ""), help="PEM client key (mTLS)")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up", help="run an encoder, a search service and the search page here until Ctrl-C"
    )
    up.add_argument(
        "--model", default="ViT-B/32", help="a CLIP model name (downloaded once) or a checkpoint file"
    )
    up.add_argument("--milvus-uri", default="./milvus.db", help="a Milvus Lite file or http://host:19530")
    up.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    up.add_argument("--encoder-port", type=int, default=50051)
    up.add_argument("--server-port", type=int, default=50052)
    up.add_argument("--web-port", type=int, default=WEB_PORT, help="the search page's port")
    up.set_defaults(run=cmd_up)

    ingest = commands.add_parser("ingest", help="store the pictures in files and folders")
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="metadata for every picture"
    )
    ingest.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.add_argument("--json", action="store_true", help="the per-item results as JSON")
    ingest.set_defaults(run=cmd_ingest)

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
    search.add_argument("--top-k", type=int, default=10)
    search.add_argument("--offset", type=int, default=0, help="skip this many hits (pagination)")
    search.add_argument("--min-score", type=float, help="leave out hits that score below this (-1..1)")
    search.add_argument("--filter", help="a Milvus filter, e.g. 'metadata[\"album\"] == {album}'")
    search.add_argument(
        "--param", action="append", default=[], metavar="NAME=TEXT", help="a string parameter"
    )
    search.add_argument(
        "--param-json", action="append", default=[], metavar="NAME=JSON", help="a typed parameter"
    )
    search.add_argument("--json", action="store_true")
    search.add_argument("--grid", metavar="PNG", help="also write a contact sheet of the hits")
    search.set_defaults(run=cmd_search)

    commands.add_parser("stats", help="how many pictures, which model").set_defaults(run=cmd_stats)
    commands.choices["stats"].add_argument("--json", action="store_true")

    get = commands.add_parser("get", help="the stored records of ids")
    get.add_argument("ids", nargs="+", metavar="ID")
    get.set_defaults(run=cmd_get)

    delete = commands.add_parser("delete", help="delete pictures by id or by filter")
    delete.add_argument("--id", action="append", default=[], metavar="ID")
    delete.add_argument("--filter")
    delete.add_argument("--param", action="append", default=[], metavar="NAME=TEXT")
    delete.add_argument("--param-json", action="append", default=[], metavar="NAME=JSON")
    delete.set_defaults(run=cmd_delete)

    encode = commands.add_parser("encode", help="the vector of a text or an image")
    encode.add_argument("text", nargs="?", default="")
    encode.add_argument("--image")
    encode.add_argument("--json", action="store_true")
    encode.set_defaults(run=cmd_encode)

    demo = commands.add_parser(
        "demo", help="the whole product on synthetic pictures, offline, in one command"
    )
    demo.add_argument("--workdir", default=".work/demo", help="where pictures, the database and grids go")
    demo.add_argument("--model", default="", help="default: the small CLIP trained on synthetic pictures")
    demo.add_argument(
        "--per-class", type=int, default=10, help="pictures of each of the 48 colour x shape pairs"
    )
    demo.add_argument("--pictures", help="a folder of your own pictures instead of synthetic ones")
    demo.add_argument("--query", action="append", default=[], help="a text query for --pictures (repeatable)")
    demo.add_argument("--image-query", help="a picture to search by, for --pictures")
    demo.add_argument("--top-k", type=int, default=10)
    demo.add_argument("--no-progress", action="store_true")
    demo.add_argument(
        "--web", action="store_true", help="serve the search page on the collection until Ctrl-C (make web)"
    )
    demo.add_argument("--web-port", type=int, default=WEB_PORT, help="the search page's port (with --web)")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        parser.error(str(error))
    except ImageSearchError as error:
        print(f"imgsearch: {error}", file=sys.stderr)
        if error.code == grpc.StatusCode.UNAVAILABLE and error.target == args.server:
            print(
                f"  is the search service running at {args.server}? Start one with `imgsearch up`.",
                file=sys.stderr,
            )
        elif error.code == grpc.StatusCode.UNAVAILABLE and error.target == args.encoder:
            print(
                f"  is the encoder running at {args.encoder}? Start one with `imgsearch up`.", file=sys.stderr
            )
        return EXIT_FAILED
    except (FileNotFoundError, ValueError) as error:
        print(f"imgsearch: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

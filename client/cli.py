"""`imgsearch`: the command line of the product. See `imgsearch --help`."""

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from imagesearch.tls import channel_credentials

from . import protocol
from .errors import ImageSearchError
from .grid import write_grid
from .local import local_services
from .models import Hit
from .sync import EncoderClient, SearchClient

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
EPILOG = """exit codes:
  0  all done
  1  failed (the message says why and what to do)
  2  usage error
  3  some items failed, the rest were done (ingest)

environment: IMGSEARCH_SERVER, IMGSEARCH_ENCODER, IMGSEARCH_COLLECTION, IMGSEARCH_TOKEN,
  IMGSEARCH_TLS, IMGSEARCH_TLS_CA, IMGSEARCH_TLS_CERT, IMGSEARCH_TLS_KEY"""


class UsageError(Exception):
    pass


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


def cmd_up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(
        f"starting the encoder ({args.model} on {args.device}) and the search service ({args.milvus_uri})..."
    )
    with local_services(
        args.model, args.milvus_uri, args.device, args.encoder_port, args.server_port
    ) as services:
        print(f"encoder service: {services.encoder}")
        print(f"search service:  {services.search}")
        print(
            f"metrics:         http://127.0.0.1:{services.metrics_ports[0]}/metrics (encoder), "
            f"http://127.0.0.1:{services.metrics_ports[1]}/metrics (search)"
        )
        print("ready; Ctrl-C stops both")
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
    if bool(args.text) == bool(args.image):
        raise UsageError("search takes a TEXT or --image PATH (one of them)")
    options = {
        "top_k": args.top_k,
        "offset": args.offset,
        "filter": args.filter,
        "filter_params": filter_params(args),
    }
    with search_client(args) as client:
        hits = (
            client.search_image(args.image, **options)
            if args.image
            else client.search_text(args.text, **options)
        )
    if args.json:
        print_json(hits)
    else:
        print_hits(hits)
    if args.grid:
        title = f"image: {Path(args.image).name}" if args.image else f"text: {args.text}"
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
    from .demo import DemoPlan, run_demo, synthetic_plan  # only the demo needs the synthetic package

    workdir = Path(args.workdir)
    if args.pictures:
        pictures = Path(args.pictures)
        if not args.query or not args.image_query:
            raise UsageError("demo --pictures also needs --query TEXT and --image-query PATH")
        plan = DemoPlan(pictures, args.model or "ViT-B/32", tuple(args.query), Path(args.image_query), False)
    else:
        plan = synthetic_plan(workdir, args.model, args.per_class)
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

    up = commands.add_parser("up", help="run an encoder and a search service here until Ctrl-C")
    up.add_argument(
        "--model", default="ViT-B/32", help="a CLIP model name (downloaded once) or a checkpoint file"
    )
    up.add_argument("--milvus-uri", default="./milvus.db", help="a Milvus Lite file or http://host:19530")
    up.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    up.add_argument("--encoder-port", type=int, default=50051)
    up.add_argument("--server-port", type=int, default=50052)
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

    search = commands.add_parser("search", help='find pictures by text ("a white dog") or by --image')
    search.add_argument("text", nargs="?", default="")
    search.add_argument("--image", help="find pictures like this one")
    search.add_argument("--top-k", type=int, default=10)
    search.add_argument("--offset", type=int, default=0, help="skip this many hits (pagination)")
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

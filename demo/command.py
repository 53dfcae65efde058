"""`imgsearch demo`: added to the command line through the `imgsearch.commands` entry point."""

from __future__ import annotations  # argparse's sub-parser type is generic to type checkers only

import argparse
import sys
from pathlib import Path

from client.cli import port_argument
from client.commands import EXIT_FAILED, EXIT_OK, UsageError, stop_on_signal
from client.output import shown
from imagesearch.defaults import DEFAULT_MODEL, WEB_PORT

from .run import TOP_K, DemoPlan, NothingToSearch, run_demo, serve_page, synthetic_plan

PER_CLASS = 10


def positive_int(text: str) -> int:
    """--per-class, --top-k: 0 would start the services only to ingest or find nothing."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return number


def _refuse_ignored_flags(args: argparse.Namespace) -> None:
    """Each flag serves one kind of demo; given to another, it would be ignored without a word."""
    queries = "goes with --pictures, and not with --web (the page takes the queries there)"
    for ignored, flag, why in (
        (args.query and (not args.pictures or args.web), "--query", queries),
        (args.image_query and (not args.pictures or args.web), "--image-query", queries),
        (
            args.per_class is not None and args.pictures,
            "--per-class",
            "is for the synthetic pictures, not --pictures",
        ),
        (args.top_k is not None and args.web, "--top-k", "is for the printed hits, not --web"),
        (args.web_port is not None and not args.web, "--web-port", "goes with --web"),
    ):
        if ignored:
            raise UsageError(f"demo {flag} {why}")


def _existing(path: str, flag: str, folder: bool) -> Path:
    """`path`, refused before anything starts unless it is a folder (or, not `folder`, a file): the services
    started, then the ingest ran, before a missing one was found."""
    found, kind = Path(path), "folder" if folder else "file"
    if not found.exists():
        raise UsageError(f"demo {flag} {path}: no such {kind}")
    if found.is_dir() != folder:
        raise UsageError(f"demo {flag} {path} is not a {kind}")
    return found


def cmd_demo(args: argparse.Namespace) -> int:
    _refuse_ignored_flags(args)
    workdir = Path(args.workdir)
    if args.pictures:
        if not args.web and not (args.query and args.image_query):
            raise UsageError("demo --pictures also needs --query TEXT and --image-query PATH (or --web)")
        pictures = _existing(args.pictures, "--pictures", folder=True)
        image_query = _existing(args.image_query, "--image-query", folder=False) if args.image_query else None
        plan = DemoPlan(pictures, args.model or DEFAULT_MODEL, tuple(args.query), image_query, False)
    else:
        plan = synthetic_plan(workdir, args.model, args.per_class or PER_CLASS)
    try:
        if args.web:
            web_port = WEB_PORT if args.web_port is None else args.web_port
            serve_page(workdir, plan, web_port, stop_on_signal, progress=not args.no_progress)
        else:
            run_demo(workdir, plan, args.top_k or TOP_K, progress=not args.no_progress)
    except NothingToSearch as error:
        print(f"imgsearch: {shown(str(error))}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo", help="the whole product on synthetic pictures, offline, in one command"
    )
    # Defaults that depend on other flags are None here, so that a flag given where it does nothing is told.
    where = "where pictures, the database and grids go (default %(default)s)"
    demo.add_argument("--workdir", default=".work/demo", help=where)
    models = "default: the small CLIP trained on synthetic pictures; with --pictures, ViT-B/32 (downloaded)"
    demo.add_argument("--model", default="", help=models)
    demo.add_argument(
        "--per-class",
        type=positive_int,
        help=f"pictures of each of the 48 colour x shape pairs (default {PER_CLASS})",
    )
    demo.add_argument("--pictures", help="a folder of your own pictures instead of synthetic ones")
    demo.add_argument("--query", action="append", default=[], help="a text query for --pictures (repeatable)")
    demo.add_argument("--image-query", help="a picture to search by, for --pictures")
    demo.add_argument("--top-k", type=positive_int, help=f"hits per query (default {TOP_K})")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar while ingesting")
    demo.add_argument(
        "--web", action="store_true", help="serve the search page on the collection until Ctrl-C (make web)"
    )
    demo.add_argument(
        "--web-port", type=port_argument, help=f"the search page's port (with --web; default {WEB_PORT})"
    )
    demo.set_defaults(run=cmd_demo)

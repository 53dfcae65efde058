"""`imgsearch demo`: added to the command line through the `imgsearch.commands` entry point."""

from __future__ import annotations  # argparse's sub-parser type is generic to type checkers only

import argparse
from pathlib import Path

from client.cli import port_argument
from client.commands import UsageError, stop_on_signal
from imagesearch.defaults import WEB_PORT

from .run import DemoPlan, run_demo, serve_page, synthetic_plan


def cmd_demo(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    if args.pictures:
        if not args.query or not args.image_query:
            raise UsageError("demo --pictures also needs --query TEXT and --image-query PATH")
        plan = DemoPlan(
            Path(args.pictures), args.model or "ViT-B/32", tuple(args.query), Path(args.image_query), False
        )
    else:
        plan = synthetic_plan(workdir, args.model, args.per_class)
    if args.web:
        return serve_page(workdir, plan, args.web_port, stop_on_signal(), progress=not args.no_progress)
    return run_demo(workdir, plan, args.top_k, progress=not args.no_progress)


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    demo.add_argument(
        "--web-port", type=port_argument, default=WEB_PORT, help="the search page's port (with --web)"
    )
    demo.set_defaults(run=cmd_demo)

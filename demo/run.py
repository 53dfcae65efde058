"""The product's main job in one command, through the SDK and two local services.

By default, offline: renders labelled synthetic pictures, starts an encoder (the small CLIP trained on such
pictures) and a search service on a Milvus Lite file in the work folder, ingests the pictures, runs text
queries and an image query, prints the hits, writes one grid per query, and stops the services. With
`--pictures DIR --model ViT-B/32 --query "a white dog" --image-query PATH` it does the same for a folder of
real photos.
With `--web` (`make web`) it starts the search page too and keeps everything running until Ctrl-C.
"""

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client import Hit, SearchClient
from client.grid import write_grid
from client.local import LocalServices, local_services
from client.output import progress_bar
from synthetic.evaluation import label_of, write_pictures
from synthetic.pictures import render

# Package data, so that it is found wherever the project is installed from.
SMALL_CLIP = Path(__file__).resolve().parent / "small-clip-synthetic.pt"
DEMO_SEED = 20261126  # not a training seed: the demo shows pictures the model has never seen
SYNTHETIC_QUERIES = (
    "a red circle",
    "a blue square",
    "a photo of a green star",
    "a yellow triangle",
    "a white hexagon",
)
SYNTHETIC_IMAGE_QUERY = ("purple", "cross")
COLLECTION = "demo"
TOP_K = 10


class NothingToSearch(Exception):
    """The plan's folder gave no picture to search."""


@dataclass(frozen=True)
class DemoPlan:
    pictures: Path
    model: str
    queries: tuple[str, ...]
    image_query: Path | None  # None: no search by picture (the search page's demo of --pictures)
    labelled: bool  # file names say what each picture shows, so hits can be checked


def synthetic_plan(workdir: Path, model: str, per_class: int) -> DemoPlan:
    """Renders the demo pictures (never seen in training) and the image query into the work folder."""
    pictures = workdir / "pictures"
    write_pictures(pictures, per_class, DEMO_SEED)
    query = workdir / "query-purple-cross.jpg"
    query.write_bytes(render(*SYNTHETIC_IMAGE_QUERY, np.random.default_rng(DEMO_SEED + 1)).jpeg)
    if not model and not SMALL_CLIP.is_file():
        raise FileNotFoundError(f"no model at {SMALL_CLIP}: pass --model PATH")
    return DemoPlan(pictures, model or str(SMALL_CLIP), SYNTHETIC_QUERIES, query, labelled=True)


def _show(title: str, hits: list[Hit], grid: Path, wanted: str | None) -> None:
    checked = (
        f"{sum(label_of(h.uri) == wanted for h in hits)} of the top {len(hits)} show a {wanted}; "
        if wanted
        else ""
    )
    print(f"\n{title}  ->  {checked}grid: {grid}")
    for rank, hit in enumerate(hits[:5], start=1):
        print(f"  {rank}. {hit.score:.3f}  {hit.uri}")


@contextmanager
def _ingested(
    workdir: Path, plan: DemoPlan, progress: bool, web_port: int | None = None
) -> Iterator[tuple[LocalServices, SearchClient]]:
    """The services on a Milvus Lite file in `workdir`, the plan's pictures ingested; stopped at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "services.log"
    print(f"demo in {workdir}: model {plan.model}, pictures in {plan.pictures}; service logs in {log_path}")
    with (
        log_path.open("w") as log,
        # Any free ports, and no metrics pages: the demo runs beside whatever else runs here.
        local_services(
            plan.model,
            str(workdir / "milvus.db"),
            "auto",
            0,
            0,
            log,
            metrics_ports=(-1, -1),
            web_port=web_port,
            web_collection=COLLECTION,
        ) as local,
        SearchClient(local.search, collection=COLLECTION, timeout=600) as client,
    ):
        with progress_bar(progress) as bar:
            summary = client.ingest([plan.pictures], progress=bar)
        print(
            f"ingested: stored {summary.stored}, already present {summary.present}, failed {summary.failed}"
        )
        if not (summary.stored or summary.present):  # else every search failed: no collection was made
            raise NothingToSearch(
                f"no picture under {plan.pictures} could be ingested ({summary.failed} failed, "
                f"{len(summary.skipped)} skipped as no picture): nothing to search"
            )
        yield local, client
    print("services stopped")


def run_demo(workdir: Path, plan: DemoPlan, top_k: int = TOP_K, progress: bool = True) -> None:
    grids = workdir / "grids"
    with _ingested(workdir, plan, progress) as (_, client):
        for query in plan.queries:
            hits = client.search_text(query, top_k=top_k)
            grid = write_grid(
                hits, grids / f"{re.sub(r'[^a-z0-9]+', '-', query.lower())}.png", f"text: {query}"
            )
            _show(f'"{query}"', hits, grid, " ".join(query.split()[-2:]) if plan.labelled else None)
        if plan.image_query is not None:
            hits = client.search_image(plan.image_query, top_k=top_k)
            grid = write_grid(hits, grids / "image-query.png", f"image: {plan.image_query.name}")
            _show(
                f"image {plan.image_query}",
                hits,
                grid,
                " ".join(SYNTHETIC_IMAGE_QUERY) if plan.labelled else None,
            )
        stats = client.stats()
        print(f"\ncollection {stats.collection!r}: {stats.count} pictures, model {stats.model}")


def serve_page(
    workdir: Path,
    plan: DemoPlan,
    web_port: int,
    stopping: Callable[[], threading.Event],
    progress: bool = True,
) -> None:
    """`make web`: the demo's collection behind the search page, until the event that `stopping` gives once
    the services are up is set (`stop_on_signal`: Ctrl-C or SIGTERM)."""
    with _ingested(workdir, plan, progress, web_port) as (local, _):
        stop = stopping()
        print(f"\nsearch page: {local.web}/?q=a+red+circle\nCtrl-C stops everything")
        stop.wait()
        print("stopping...")

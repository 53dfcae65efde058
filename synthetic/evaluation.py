"""Retrieval quality of a collection of labelled synthetic pictures, measured through the search service."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client import SearchClient

from .pictures import classes, render, render_set


@dataclass(frozen=True)
class QueryScore:
    query: str
    precision: float  # of the top k hits, the share that shows the queried colour and shape


@dataclass(frozen=True)
class Quality:
    text: list[QueryScore]
    image: list[QueryScore]

    @staticmethod
    def mean(scores: list[QueryScore]) -> float:
        return float(np.mean([score.precision for score in scores]))

    @staticmethod
    def worst(scores: list[QueryScore]) -> QueryScore:
        return min(scores, key=lambda score: score.precision)


def write_pictures(folder: Path, per_class: int, seed: int) -> None:
    """Labelled file names: `<color>-<shape>-<n>.jpg`."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, picture in enumerate(render_set(per_class, seed)):
        (folder / f"{picture.color}-{picture.shape}-{index:05d}.jpg").write_bytes(picture.jpeg)


def label_of(uri: str) -> str:
    """The colour and shape of a picture that write_pictures named."""
    color, shape, _ = Path(uri).stem.split("-")
    return f"{color} {shape}"


def measure(client: SearchClient, top_k: int, query_seed: int) -> Quality:
    """Precision@top_k of a text query and of a fresh picture per colour x shape, over the collection."""
    rng = np.random.default_rng(query_seed)
    text, image = [], []
    for color, shape in classes():
        wanted = f"{color} {shape}"
        hits = client.search_text(f"a {wanted}", top_k=top_k)
        text.append(QueryScore(f"a {wanted}", sum(label_of(h.uri) == wanted for h in hits) / top_k))
        hits = client.search_image(render(color, shape, rng).jpeg, top_k=top_k)
        image.append(
            QueryScore(f"picture of a {wanted}", sum(label_of(h.uri) == wanted for h in hits) / top_k)
        )
    return Quality(text, image)

"""Retrieval quality of a collection of labelled synthetic pictures, measured through the search service."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client import Hit, SearchClient

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


def _precision(hits: list[Hit], wanted: str, top_k: int) -> float:
    return sum(label_of(hit.uri) == wanted for hit in hits) / top_k


def measure(client: SearchClient, top_k: int, query_seed: int, query_pictures: int) -> Quality:
    """Precision@top_k, over the collection, of a text query per colour x shape and of `query_pictures` fresh
    pictures of it (their mean: one picture alone makes a noisy score)."""
    rng = np.random.default_rng(query_seed)
    text, image = [], []
    for color, shape in classes():
        wanted = f"{color} {shape}"
        hits = client.search_text(f"a {wanted}", top_k=top_k)
        text.append(QueryScore(f"a {wanted}", _precision(hits, wanted, top_k)))
        pictures = [render(color, shape, rng) for _ in range(query_pictures)]
        precisions = [_precision(client.search_image(p.jpeg, top_k=top_k), wanted, top_k) for p in pictures]
        image.append(QueryScore(f"pictures of a {wanted}", float(np.mean(precisions))))
    return Quality(text, image)

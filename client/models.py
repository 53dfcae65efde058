"""The SDK's result types: small typed objects, no protobuf in sight."""

import numbers
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import refused


def is_number(value: object) -> bool:
    """A real number, numpy's included (np.float32 is no float); never a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# A metadata value as stored: text, a number, a truth value, or a list of those.
MetadataValue = str | int | float | bool | list[str | int | float | bool]
Outcome = Literal["stored", "present", "failed", "skipped"]


@dataclass(frozen=True, kw_only=True)
class Record:
    """A stored picture. `model`, `ingested_at` and `vector` are None unless they were asked for."""

    id: str
    uri: str
    metadata: dict[str, MetadataValue]
    model: str | None = None
    ingested_at: int | None = None
    vector: np.ndarray | None = None


@dataclass(frozen=True, kw_only=True)
class Hit(Record):
    score: float  # cosine similarity to the query, -1..1


@dataclass(frozen=True)
class QueryPart:
    """One part of a mixed query: a text, a picture (bytes or a path) or a stored picture's id, weighted.

    The parts' vectors are added up by weight; a negative weight moves the results away from the part
    (QueryPart(text="a dog on a beach"), QueryPart(text="people", weight=-0.5)).
    """

    text: str | None = None
    image: bytes | str | Path | None = None
    id: str | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        given = [name for name in ("text", "image", "id") if getattr(self, name) is not None]
        if len(given) != 1:
            raise refused(f"a QueryPart holds exactly one of text, image or id, not {given or 'none'}")
        for name in ("text", "id"):
            if not isinstance(getattr(self, name), str | None):
                raise refused(f"QueryPart {name} = {getattr(self, name)!r} is not text")
        if not is_number(self.weight):
            raise refused(f"QueryPart weight = {self.weight!r} is not a number")


@dataclass(frozen=True)
class IngestItem:
    """What happened to one file: stored now, present already, failed, or skipped as not a picture (by
    its content); `error` says why for the last two."""

    uri: str
    id: str
    outcome: Outcome
    error: str = ""


@dataclass
class IngestSummary:
    """Every entry found under the paths (`total`) and what happened to each (`items`, as they finish)."""

    total: int = 0
    items: list[IngestItem] = field(default_factory=list)
    counts: Counter[Outcome] = field(default_factory=Counter)

    def add(self, item: IngestItem) -> None:
        self.items.append(item)
        self.counts[item.outcome] += 1

    @property
    def stored(self) -> int:
        return self.counts["stored"]

    @property
    def present(self) -> int:
        return self.counts["present"]

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    @property
    def skipped(self) -> list[str]:
        """The files that are not pictures, by their content."""
        return [item.uri for item in self.items if item.outcome == "skipped"]


@dataclass(frozen=True)
class ImageVector:
    """One image's encoding: a vector, or the reason there is none."""

    vector: np.ndarray | None
    error: str | None


@dataclass(frozen=True)
class Stats:
    collection: str
    count: int
    model: str
    dimension: int
    index_type: str
    metric_type: str


@dataclass(frozen=True)
class Limits:
    """The search service's bounds: what it would refuse, the SDK refuses before sending."""

    max_message_bytes: int
    max_image_bytes: int
    max_top_k: int
    max_offset: int

"""The SDK's result types: small typed objects, no protobuf in sight."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from imagesearch.v1 import encoder_pb2, search_pb2

Outcome = Literal["stored", "present", "failed"]
OUTCOMES: dict[int, Outcome] = {
    search_pb2.OUTCOME_STORED: "stored",
    search_pb2.OUTCOME_PRESENT: "present",
    search_pb2.OUTCOME_FAILED: "failed",
}


@dataclass(frozen=True)
class Record:
    id: str
    uri: str
    metadata: dict[str, str]
    model: str = ""
    ingested_at: int = 0
    vector: np.ndarray | None = None

    @classmethod
    def from_proto(cls, record: search_pb2.Record) -> "Record":
        return cls(
            id=record.id,
            uri=record.uri,
            metadata=dict(record.metadata),
            model=record.model,
            ingested_at=record.ingested_at,
            vector=np.asarray(record.vector, dtype=np.float32) if record.vector else None,
        )


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    uri: str
    metadata: dict[str, str]
    record: Record

    @classmethod
    def from_proto(cls, hit: search_pb2.Hit) -> "Hit":
        record = Record.from_proto(hit.record)
        return cls(id=record.id, score=hit.score, uri=record.uri, metadata=record.metadata, record=record)


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
            raise ValueError(f"a QueryPart holds exactly one of text, image or id, not {given or 'none'}")


@dataclass(frozen=True)
class IngestItem:
    uri: str
    id: str
    outcome: Outcome
    error: str = ""


@dataclass
class IngestSummary:
    """What happened to every file: stored now, present already, failed (with why), or skipped as no image."""

    items: list[IngestItem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    _counts: dict[Outcome, int] = field(default_factory=lambda: {"stored": 0, "present": 0, "failed": 0})

    def add(self, item: IngestItem) -> None:
        self.items.append(item)
        self._counts[item.outcome] += 1

    @property
    def stored(self) -> int:
        return self._counts["stored"]

    @property
    def present(self) -> int:
        return self._counts["present"]

    @property
    def failed(self) -> int:
        return self._counts["failed"]


@dataclass(frozen=True)
class ImageVector:
    """One image's encoding: a vector, or the reason there is none."""

    vector: np.ndarray | None
    error: str | None

    @classmethod
    def from_proto(cls, result: encoder_pb2.ImageResult) -> "ImageVector":
        if result.WhichOneof("outcome") == "vector":
            return cls(np.asarray(result.vector.values, dtype=np.float32), None)
        return cls(None, result.error)


@dataclass(frozen=True)
class Stats:
    collection: str
    count: int
    model: str
    dimension: int
    index_type: str
    metric_type: str

    @classmethod
    def from_proto(cls, stats: search_pb2.StatsResponse) -> "Stats":
        return cls(
            stats.collection, stats.count, stats.model, stats.dimension, stats.index_type, stats.metric_type
        )

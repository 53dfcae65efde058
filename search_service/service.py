"""The SearchService RPCs: request checks, queries through the encoder and the store, result mapping."""

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np

from imagesearch.defaults import PICTURE_ID
from imagesearch.errors import ServiceError, invalid_argument
from imagesearch.v1 import search_pb2, search_pb2_grpc

from .config import SearchConfig
from .encoder_replicas import EncoderReplicas, RejectedImage
from .exclusion import SharedOrAlone
from .filters import render_filter, render_value
from .ingest import Ingestion
from .metadata import record_metadata
from .metrics import SearchMetrics
from .store import METRIC, SHOWN, CollectionInfo, Store
from .thumbnails import Thumbnails

DEFAULT_TOP_K = 10
Item = TypeVar("Item", search_pb2.Hit, search_pb2.Record)
EXTRA_OUTPUT_FIELDS = {"vector", "ingested_at", "model"}
ALWAYS_RETURNED = ("id", "uri", "metadata")  # may be named in output_fields too
# Room in an answer for what comes beside its hits or records: the model's name, each item's framing.
_ANSWER_ENVELOPE_BYTES = 64 * 1024
_ITEM_FRAMING_BYTES = 8


def _record(row: dict[str, Any]) -> search_pb2.Record:
    text, typed = record_metadata(row.get("metadata") or {})
    return search_pb2.Record(
        id=row["id"],
        uri=row.get("uri", ""),
        metadata=text,
        typed_metadata=typed,
        model=row.get("model", ""),
        ingested_at=row.get("ingested_at", 0),
        vector=row.get("vector", []),
    )


def _within_limit(items: list[Item], limit: int, asked: str) -> list[Item]:
    """`items`, if an answer holding them stays within the message limit; otherwise INVALID_ARGUMENT saying
    how many would (gRPC would fail the answer with RESOURCE_EXHAUSTED "Sent message larger than max",
    naming nothing a caller could change). Only large metadata comes near it: 64 KiB a picture, twice."""
    room = limit - _ANSWER_ENVELOPE_BYTES
    for count, item in enumerate(items):
        room -= item.ByteSize() + _ITEM_FRAMING_BYTES
        if room < 0:
            raise invalid_argument(
                f"{asked}: the answer would be over the search service's message limit of {limit} bytes "
                f"(their metadata is large); at most {count} fit"
            )
    return items


def _output_fields(requested: list[str]) -> list[str]:
    unknown = sorted(set(requested) - EXTRA_OUTPUT_FIELDS - set(ALWAYS_RETURNED))
    if unknown:
        raise invalid_argument(
            f"output_fields {unknown} are not fields; choose from {sorted(EXTRA_OUTPUT_FIELDS)} "
            f"({', '.join(ALWAYS_RETURNED)} always come)"
        )
    return [*ALWAYS_RETURNED, *sorted(set(requested) & EXTRA_OUTPUT_FIELDS)]


def _checked_id(image_id: str, name: str) -> str:
    if not PICTURE_ID.fullmatch(image_id):
        raise invalid_argument(f"{name} = {image_id!r} is not an id (64 lowercase hex digits, a sha256)")
    return image_id


def _checked_ids(ids: list[str]) -> list[str]:
    return [_checked_id(image_id, f"ids[{index}]") for index, image_id in enumerate(ids)]


def _min_score(options: search_pb2.SearchOptions) -> float | None:
    if not options.HasField("min_score"):
        return None
    if not -1.0 <= options.min_score <= 1.0:  # also refuses NaN
        raise invalid_argument(f"min_score = {options.min_score} is outside -1..1")
    return options.min_score


def _checked_weights(parts: Sequence[search_pb2.QueryPart], max_parts: int) -> list[float]:
    """Each part's weight (1 when unset), once every part is known to hold something to search by."""
    if not parts:
        raise invalid_argument("parts is empty: give at least one text, image or id")
    if len(parts) > max_parts:
        raise invalid_argument(f"{len(parts)} parts is over the limit of {max_parts} (--max-query-parts)")
    weights = []
    for index, part in enumerate(parts):
        kind = part.WhichOneof("kind")
        if kind is None:
            raise invalid_argument(f"parts[{index}] has no text, image or id")
        if kind == "text" and not part.text.strip():
            raise invalid_argument(f"parts[{index}].text is empty")
        if kind == "image" and not part.image:
            raise invalid_argument(f"parts[{index}].image is empty (0 bytes)")
        if kind == "id":
            _checked_id(part.id, f"parts[{index}].id")
        weight = part.weight if part.HasField("weight") else 1.0
        if not math.isfinite(weight):
            raise invalid_argument(f"parts[{index}].weight = {weight} is not a finite number")
        weights.append(weight)
    if not any(weights):
        raise invalid_argument(f"all {len(parts)} weights are 0: nothing to search for")
    return weights


def _indices(parts: Sequence[search_pb2.QueryPart], kind: str) -> list[int]:
    return [index for index, part in enumerate(parts) if part.WhichOneof("kind") == kind]


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(
        self,
        config: SearchConfig,
        store: Store,
        encoder: EncoderReplicas,
        metrics: SearchMetrics,
        thumbnails: Thumbnails,
    ) -> None:
        self.config = config
        self.store = store
        self.encoder = encoder
        self.metrics = metrics
        self.thumbnails = thumbnails
        self._ingest_slots = threading.BoundedSemaphore(config.max_concurrent_ingests)
        self.changes = SharedOrAlone()  # ingest batches place thumbnails, write rows together; deletes alone

    def _collection(self, name: str) -> CollectionInfo:
        return self.store.require(name or self.config.collection)

    def _search(
        self,
        options: search_pb2.SearchOptions,
        encode: Callable[[CollectionInfo], tuple[str, np.ndarray]],
    ) -> tuple[list[search_pb2.Hit], str]:
        """The hits for the query vector that `encode` makes, best first, none below min_score."""
        top_k = options.top_k or DEFAULT_TOP_K
        if not 1 <= top_k <= self.config.max_top_k:
            raise invalid_argument(f"top_k = {top_k} is outside 1..{self.config.max_top_k}")
        if not 0 <= options.offset <= self.config.max_offset:
            raise invalid_argument(f"offset = {options.offset} is outside 0..{self.config.max_offset}")
        min_score = _min_score(options)
        fields = _output_fields(list(options.output_fields))
        expression = render_filter(options.filter, dict(options.filter_params))
        collection = self._collection(options.collection)
        model, vector = encode(collection)
        collection.require_model(model)
        rows = self.store.search(collection.name, vector.tolist(), top_k, options.offset, expression, fields)
        # Rows come best first, so the cut-off only trims the tail: pagination stays consistent.
        hits = [
            search_pb2.Hit(record=_record({**row["entity"], "id": row["id"]}), score=row["distance"])
            for row in rows
            if min_score is None or row["distance"] >= min_score
        ]
        return _within_limit(hits, self.config.max_message_bytes, f"top_k = {top_k}"), model

    def SearchText(
        self, request: search_pb2.SearchTextRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchTextResponse:
        if not request.text.strip():
            raise invalid_argument("text is empty")
        hits, model = self._search(request.options, lambda _: self.encoder.encode_text(request.text))
        return search_pb2.SearchTextResponse(hits=hits, model=model)

    def _encode_query_image(self, image: bytes) -> tuple[str, np.ndarray]:
        model, [result] = self.encoder.encode_images([image])
        if isinstance(result, RejectedImage):
            raise invalid_argument(f"image: {result.reason}")
        return model, result

    def SearchImage(
        self, request: search_pb2.SearchImageRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchImageResponse:
        if not request.image:
            raise invalid_argument("image is empty (0 bytes)")
        hits, model = self._search(request.options, lambda _: self._encode_query_image(request.image))
        return search_pb2.SearchImageResponse(hits=hits, model=model)

    def Search(
        self, request: search_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchResponse:
        parts = list(request.parts)
        weights = _checked_weights(parts, self.config.max_query_parts)
        hits, model = self._search(
            request.options, lambda collection: self._combined_vector(parts, weights, collection)
        )
        return search_pb2.SearchResponse(hits=hits, model=model)

    def _combined_vector(
        self, parts: list[search_pb2.QueryPart], weights: list[float], collection: CollectionInfo
    ) -> tuple[str, np.ndarray]:
        """sum(weight * vector) over the parts, unit length: texts in one encoder call, pictures in another,
        ids from their stored vectors."""
        vectors: dict[int, np.ndarray] = {}
        texts, images, ids = (_indices(parts, kind) for kind in ("text", "image", "id"))
        if texts:
            model, encoded = self.encoder.encode_texts(
                [parts[index].text for index in texts], [f"parts[{index}].text" for index in texts]
            )
            collection.require_model(model)
            vectors.update(zip(texts, encoded, strict=True))
        if images:
            model, results = self.encoder.encode_images([parts[index].image for index in images])
            collection.require_model(model)
            for index, result in zip(images, results, strict=True):
                if isinstance(result, RejectedImage):
                    raise invalid_argument(f"parts[{index}].image: {result.reason}")
                vectors[index] = result
        if ids:
            wanted = [parts[index].id for index in ids]
            stored = {
                row["id"]: row["vector"]
                for row in self.store.get(collection.name, wanted, ["id", "vector"], consistency=SHOWN)
            }
            for index in ids:
                if parts[index].id not in stored:
                    raise ServiceError(
                        grpc.StatusCode.NOT_FOUND,
                        f"parts[{index}].id = {parts[index].id} is not stored in {collection.name!r}",
                    )
                vectors[index] = np.asarray(stored[parts[index].id], dtype=np.float32)
        combined = sum(weight * vectors[index].astype(np.float64) for index, weight in enumerate(weights))
        length = float(np.linalg.norm(combined))
        # Unit vectors: a sum this much shorter than its weights is the parts cancelling out.
        if not math.isfinite(length) or length <= 1e-6 * sum(abs(weight) for weight in weights):
            raise invalid_argument(
                f"the weighted sum of parts[0..{len(parts) - 1}] has no direction (the parts cancel out): "
                "nothing to search for"
            )
        return collection.model, (combined / length).astype(np.float32)

    def GetThumbnail(
        self, request: search_pb2.GetThumbnailRequest, context: grpc.ServicerContext
    ) -> search_pb2.GetThumbnailResponse:
        image_id = _checked_id(request.id, "id")
        collection = self._collection(request.collection)
        jpeg = self.thumbnails.read(collection.name, image_id)
        if jpeg is None:
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND,
                f"no thumbnail of {image_id} in collection {collection.name!r} (a picture stored without "
                "one, by the first version or while the thumbnail folder could not be written, gets one when "
                "ingested again)",
            )
        return search_pb2.GetThumbnailResponse(jpeg=jpeg)

    def Get(self, request: search_pb2.GetRequest, context: grpc.ServicerContext) -> search_pb2.GetResponse:
        ids = _checked_ids(list(request.ids))
        fields = _output_fields([*request.output_fields, "ingested_at", "model"])  # a record is always whole
        collection = self._collection(request.collection)
        rows = {row["id"]: row for row in self.store.get(collection.name, ids, fields)}
        records = [_record(rows[image_id]) for image_id in ids if image_id in rows]
        limit = self.config.max_message_bytes
        return search_pb2.GetResponse(records=_within_limit(records, limit, f"{len(ids)} ids"))

    def Delete(
        self, request: search_pb2.DeleteRequest, context: grpc.ServicerContext
    ) -> search_pb2.DeleteResponse:
        if bool(request.ids) == bool(request.filter):
            raise invalid_argument("give either ids or a filter to delete by, not both and not neither")
        if request.ids:
            ids = search_pb2.FilterValue(
                list_value=search_pb2.FilterValueList(
                    values=[search_pb2.FilterValue(string_value=i) for i in _checked_ids(list(request.ids))]
                )
            )
            expression = f"id in {render_value('ids', ids)}"
        else:
            expression = render_filter(request.filter, dict(request.filter_params))
        collection = self._collection(request.collection)
        if request.dry_run:
            return search_pb2.DeleteResponse(deleted=self.store.count(collection.name, expression))
        # Each batch's thumbnails go as soon as its rows do: a later failure leaves none of a deleted picture.
        # An ingest puts a thumbnail in place before its row, so a delete here or on another replica that
        # finds the row removes its thumbnail too.
        deleted = self.store.delete(
            collection.name,
            expression,
            lambda batch: self.thumbnails.remove(collection.name, batch),
            self.changes.alone,
        )
        return search_pb2.DeleteResponse(deleted=deleted)

    def Stats(
        self, request: search_pb2.StatsRequest, context: grpc.ServicerContext
    ) -> search_pb2.StatsResponse:
        collection = self._collection(request.collection)
        return search_pb2.StatsResponse(
            collection=collection.name,
            count=self.store.count(collection.name, consistency=SHOWN),
            model=collection.model,
            dimension=collection.dimension,
            index_type=self.store.describe_index(collection.name),
            metric_type=METRIC,
        )

    def GetLimits(
        self, request: search_pb2.GetLimitsRequest, context: grpc.ServicerContext
    ) -> search_pb2.GetLimitsResponse:
        return search_pb2.GetLimitsResponse(
            max_message_bytes=self.config.max_message_bytes,
            max_image_bytes=self.encoder.info().max_image_bytes,
            max_top_k=self.config.max_top_k,
            max_offset=self.config.max_offset,
        )

    def Ingest(
        self, request_iterator: Iterator[search_pb2.IngestRequest], context: grpc.ServicerContext
    ) -> Iterator[search_pb2.IngestResponse]:
        if not self._ingest_slots.acquire(blocking=False):
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.config.max_concurrent_ingests} ingest streams are running already "
                "(--max-concurrent-ingests); retry later",
            )
        try:
            ingestion = Ingestion(
                self.store,
                self.encoder,
                self.config.collection,
                self.config.ingest_in_flight,
                self.metrics.ingested,
                self.thumbnails,
                self.changes,
                self.config.ingest_idle_timeout_s,
                self.config.ingest_buffer_bytes,
            )
            yield from ingestion.run(request_iterator)
        finally:
            self._ingest_slots.release()

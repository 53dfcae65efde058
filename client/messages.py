"""Requests built and responses read: the one module that both the blocking and the asyncio clients use.

What a service would refuse for its shape alone (a filter parameter of a type no filter can hold, a number
outside its field's range) is refused here, as ImageSearchError, before anything is sent.
"""

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from imagesearch.defaults import MAX_METADATA_BYTES, metadata_bytes
from imagesearch.v1 import encoder_pb2, search_pb2

from .errors import refused
from .models import Hit, ImageVector, Limits, MetadataValue, Outcome, QueryPart, Record, Stats, is_number

FilterParam = str | int | float | bool | Sequence[str | int | float | bool]
OUTCOMES: dict[int, Outcome] = {
    search_pb2.OUTCOME_STORED: "stored",
    search_pb2.OUTCOME_PRESENT: "present",
    search_pb2.OUTCOME_FAILED: "failed",
}
# Fields of a request that the first version's search service does not know, and what it does instead of what
# they ask: before sending one, a client makes sure once that its service is newer (`older_service`).
DRY_RUN_IGNORED = "dry_run (it would delete what it was asked to count)"
MIN_SCORE_IGNORED = "min_score (it would answer hits under it)"
_INT32_MAX = 2**31 - 1
_INT64 = (-(2**63), 2**63 - 1)


def _utf8(name: str, text: str) -> str:
    """`text`, refused when it is no text, or holds what UTF-8 cannot carry (bytes of a file name that is not
    UTF-8)."""
    if not isinstance(text, str):
        raise refused(f"{name} = {text!r} is not text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise refused(f"{name} = {text!r} is not UTF-8 text") from None
    return text


def _scalar(name: str, value: object) -> search_pb2.FilterValue:
    if isinstance(value, bool):
        return search_pb2.FilterValue(bool_value=value)
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise refused(f"{name} = {value} does not fit in a 64-bit integer")
        return search_pb2.FilterValue(int_value=value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise refused(f"{name} = {value} is not a finite number")
        return search_pb2.FilterValue(float_value=value)
    if isinstance(value, str):
        return search_pb2.FilterValue(string_value=_utf8(name, value))
    raise refused(
        f"{name} is {type(value).__name__} {value!r}; use text, a number, true/false, or a list of those"
    )


def typed_value(name: str, value: object) -> search_pb2.FilterValue:
    """A filter parameter or metadata value: a scalar, or a list of scalars."""
    if isinstance(value, list | tuple):
        items = [_scalar(f"{name}[{index}]", item) for index, item in enumerate(value)]
        return search_pb2.FilterValue(list_value=search_pb2.FilterValueList(values=items))
    return _scalar(name, value)


def value_of(value: search_pb2.FilterValue) -> MetadataValue:
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        return [value_of(item) for item in value.list_value.values]  # type: ignore[misc]
    return getattr(value, kind) if kind else ""


def filter_params(params: Mapping[str, FilterParam] | None) -> dict[str, search_pb2.FilterValue]:
    return {name: typed_value(f"filter parameter {name!r}", value) for name, value in (params or {}).items()}


def metadata_maps(
    metadata: Mapping[str, MetadataValue],
) -> tuple[dict[str, str], dict[str, search_pb2.FilterValue]]:
    """Text values as they are, others with their type (so that filters compare numbers as numbers)."""
    for key in metadata:
        if not isinstance(key, str) or not key:
            raise refused(f"metadata key {key!r} is not a non-empty text")
        _utf8("a metadata key", key)
    strings = {
        key: _utf8(f"metadata[{key!r}]", value) for key, value in metadata.items() if isinstance(value, str)
    }
    typed = {
        key: typed_value(f"metadata[{key!r}]", value)
        for key, value in metadata.items()
        if not isinstance(value, str)
    }
    # Refused here, as the service would refuse every picture of an ingest for it, one by one.
    if (size := metadata_bytes(metadata)) > MAX_METADATA_BYTES:
        raise refused(f"metadata is {size} bytes as JSON, over the limit of {MAX_METADATA_BYTES} bytes")
    return strings, typed


def _bounded(name: str, value: int, lowest: int) -> int:
    """`value` as an int, if it is a whole number (numpy's too) in range; never a bool or a float."""
    try:
        whole = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        whole = None
    if whole is None or not lowest <= whole <= _INT32_MAX:
        raise refused(f"{name} = {value!r} is not a whole number from {lowest} to {_INT32_MAX}")
    return whole


def _score(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if not is_number(value):
        raise refused(f"{name} = {value!r} is not a number")
    if not -1 <= value <= 1:  # NaN included
        raise refused(f"{name} = {value!r} is outside -1..1")
    return float(value)


def search_options(
    collection: str,
    top_k: int,
    offset: int,
    filter: str | None,
    params: Mapping[str, FilterParam] | None,
    output_fields: Sequence[str],
    min_score: float | None,
) -> search_pb2.SearchOptions:
    return search_pb2.SearchOptions(
        collection=collection,
        top_k=_bounded("top_k", top_k, 1),
        offset=_bounded("offset", offset, 0),
        filter=_utf8("filter", filter or ""),
        filter_params=filter_params(params),
        output_fields=list(output_fields),
        min_score=_score("min_score", min_score),  # None leaves it unset: no cut-off
    )


def search_text_request(text: str, options: search_pb2.SearchOptions) -> search_pb2.SearchTextRequest:
    return search_pb2.SearchTextRequest(text=_utf8("text", text), options=options)


def search_image_request(picture: bytes, options: search_pb2.SearchOptions) -> search_pb2.SearchImageRequest:
    return search_pb2.SearchImageRequest(image=picture, options=options)


def search_request(
    parts: Sequence[QueryPart], pictures: Sequence[bytes | None], options: search_pb2.SearchOptions
) -> search_pb2.SearchRequest:
    """The parts, each with the bytes of its picture (None for a text or a stored id)."""
    sent = [query_part(part, picture) for part, picture in zip(parts, pictures, strict=True)]
    return search_pb2.SearchRequest(parts=sent, options=options)


def stats_request(collection: str) -> search_pb2.StatsRequest:
    return search_pb2.StatsRequest(collection=collection)


LIMITS_REQUEST = search_pb2.GetLimitsRequest()


def encode_images_request(pictures: Sequence[bytes]) -> encoder_pb2.EncodeImagesRequest:
    return encoder_pb2.EncodeImagesRequest(images=pictures)


def encode_text_request(texts: str | Sequence[str]) -> encoder_pb2.EncodeTextRequest:
    """One text, or several (a text is one, not a sequence of letters)."""
    listed = [texts] if isinstance(texts, str) else list(texts)
    return encoder_pb2.EncodeTextRequest(
        texts=[_utf8(f"texts[{index}]", text) for index, text in enumerate(listed)]
    )


def query_part(part: QueryPart, picture: bytes | None) -> search_pb2.QueryPart:
    """The part as sent; `picture` holds the bytes of an image part, read by the client."""
    if part.text is not None:
        return search_pb2.QueryPart(text=_utf8("text", part.text), weight=part.weight)
    if picture is not None:
        return search_pb2.QueryPart(image=picture, weight=part.weight)
    return search_pb2.QueryPart(id=part.id, weight=part.weight)


def _record(record: search_pb2.Record, asked: Sequence[str]) -> Record:
    return Record(
        id=record.id,
        uri=record.uri,
        metadata={key: value_of(value) for key, value in record.typed_metadata.items()}
        or dict(record.metadata),
        model=record.model if "model" in asked else None,
        ingested_at=record.ingested_at if "ingested_at" in asked else None,
        vector=np.asarray(record.vector, dtype=np.float32) if "vector" in asked else None,
    )


def hits(
    response: search_pb2.SearchTextResponse | search_pb2.SearchImageResponse | search_pb2.SearchResponse,
    output_fields: Sequence[str],
) -> list[Hit]:
    return [Hit(score=hit.score, **vars(_record(hit.record, output_fields))) for hit in response.hits]


def records(response: search_pb2.GetResponse, output_fields: Sequence[str]) -> list[Record]:
    """Records as Get returns them: with their model and time of ingestion, and what else was asked for."""
    asked = [*output_fields, "model", "ingested_at"]
    return [_record(record, asked) for record in response.records]


def image_list(images: bytes | str | Path | Sequence[bytes | str | Path]) -> list[bytes | str | Path]:
    """One image (its bytes, or a path), or several: bytes or a path are one, not a sequence of letters."""
    return [images] if isinstance(images, bytes | bytearray | str | Path) else list(images)


def _id_list(ids: str | Sequence[str] | None) -> list[str]:
    """One id, or several (a text is one id, not a sequence of letters)."""
    if isinstance(ids, str):
        return [ids]
    if isinstance(ids, bytes) or not isinstance(ids, Iterable | None):
        raise refused(f"ids = {ids!r} is neither an id (text) nor a list of ids")
    return [_utf8(f"ids[{index}]", id) for index, id in enumerate(ids or [])]


def query_parts(parts: QueryPart | Sequence[QueryPart]) -> list[QueryPart]:
    """`parts` (one QueryPart, or several), each a QueryPart: a text given alone was taken as its letters."""
    if isinstance(parts, QueryPart):
        return [parts]
    if isinstance(parts, str):
        raise refused(f"parts = {parts!r} is a text, not a list of QueryPart: search_text takes a text alone")
    if not isinstance(parts, Iterable):
        raise refused(f"parts = {parts!r} is not a list of QueryPart")
    listed = list(parts)
    for index, part in enumerate(listed):
        if not isinstance(part, QueryPart):
            raise refused(
                f"parts[{index}] = {part!r} is not a QueryPart: QueryPart(text=...), QueryPart(image=...) "
                "or QueryPart(id=...)"
            )
    return listed


def thumbnail_request(collection: str, id: str) -> search_pb2.GetThumbnailRequest:
    return search_pb2.GetThumbnailRequest(collection=collection, id=_utf8("id", id))


def get_request(
    collection: str, ids: str | Sequence[str], output_fields: Sequence[str]
) -> search_pb2.GetRequest:
    return search_pb2.GetRequest(collection=collection, ids=_id_list(ids), output_fields=list(output_fields))


def delete_request(
    collection: str,
    ids: str | Sequence[str] | None,
    filter: str | None,
    params: Mapping[str, FilterParam] | None,
    dry_run: bool,
) -> search_pb2.DeleteRequest:
    if bool(ids) == bool(filter):
        raise refused("delete needs either ids or a filter, not both and not neither")
    return search_pb2.DeleteRequest(
        collection=collection,
        ids=_id_list(ids),
        filter=_utf8("filter", filter or ""),
        filter_params=filter_params(params),
        dry_run=dry_run,
    )


def ingest_request(
    collection: str, image: bytes, uri: str, strings: dict[str, str], typed: dict[str, search_pb2.FilterValue]
) -> search_pb2.IngestRequest:
    return search_pb2.IngestRequest(
        collection=collection, image=image, uri=uri, metadata=strings, typed_metadata=typed
    )


def stats(response: search_pb2.StatsResponse) -> Stats:
    return Stats(
        response.collection,
        response.count,
        response.model,
        response.dimension,
        response.index_type,
        response.metric_type,
    )


def limits(response: search_pb2.GetLimitsResponse) -> Limits:
    return Limits(
        response.max_message_bytes, response.max_image_bytes, response.max_top_k, response.max_offset
    )


def text_vectors(response: encoder_pb2.EncodeTextResponse) -> np.ndarray:
    """(texts, dimension) float32 unit vectors."""
    return np.asarray([result.vector.values for result in response.results], dtype=np.float32)


def image_vectors(response: encoder_pb2.EncodeImagesResponse) -> list[ImageVector]:
    return [
        ImageVector(np.asarray(result.vector.values, dtype=np.float32), None)
        if result.WhichOneof("outcome") == "vector"
        else ImageVector(None, result.error)
        for result in response.results
    ]

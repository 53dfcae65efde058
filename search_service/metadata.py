"""Metadata as stored: one JSON object per picture, whose values keep their type.

An IngestRequest brings text values (`metadata`) and typed ones (`typed_metadata`); a Record gives every
value back both ways: as text, and with its type. A typed value is a scalar or a list of scalars, as the SDK
sends them: a list nested 49 deep was stored, and then every search that found it failed, since the answer
nested past what protobuf reads.
"""

import json
import math
from collections.abc import Mapping
from typing import Any

from imagesearch.v1 import search_pb2


class BadMetadata(ValueError):
    """Metadata that cannot be stored; the message names the key."""


def _plain(key: str, value: search_pb2.FilterValue, in_list: bool = False) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "list_value":
        if in_list:
            raise BadMetadata(
                f"typed_metadata[{key!r}] holds a list inside a list: a value is a scalar or a list of them"
            )
        return [_plain(key, item, in_list=True) for item in value.list_value.values]
    if kind is None:
        raise BadMetadata(f"typed_metadata[{key!r}] has no value")
    if kind == "float_value" and not math.isfinite(value.float_value):
        raise BadMetadata(f"typed_metadata[{key!r}] is {value.float_value}, not a finite number")
    return getattr(value, kind)


def stored_metadata(
    strings: Mapping[str, str], typed: Mapping[str, search_pb2.FilterValue]
) -> dict[str, Any]:
    """The JSON object to store; BadMetadata when a key is in both maps or a value has no JSON form."""
    for key in strings.keys() & typed.keys():
        raise BadMetadata(f"metadata key {key!r} is in both metadata and typed_metadata")
    if "" in strings.keys() | typed.keys():
        raise BadMetadata("metadata key '' is empty: no filter could name it")
    return {**strings, **{key: _plain(key, value) for key, value in typed.items()}}


def _typed(value: Any) -> search_pb2.FilterValue:
    if isinstance(value, bool):
        return search_pb2.FilterValue(bool_value=value)
    if isinstance(value, int):
        return search_pb2.FilterValue(int_value=value)
    if isinstance(value, float):
        return search_pb2.FilterValue(float_value=value)
    if isinstance(value, list) and not any(isinstance(item, list | dict) for item in value):
        return search_pb2.FilterValue(list_value=search_pb2.FilterValueList(values=map(_typed, value)))
    # Anything deeper (stored before lists of lists were refused, or by another writer) goes as its JSON text.
    return search_pb2.FilterValue(string_value=value if isinstance(value, str) else json.dumps(value))


def record_metadata(stored: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, search_pb2.FilterValue]]:
    """A stored object as a Record carries it: every value as text (non-text as JSON), and typed."""
    text = {key: value if isinstance(value, str) else json.dumps(value) for key, value in stored.items()}
    return text, {key: _typed(value) for key, value in stored.items()}

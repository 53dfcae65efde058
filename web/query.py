"""A search request's query string (and uploaded picture) as SDK query parts and options.

    q=TEXT                 a text, weight 1                      (repeatable)
    like=ID                a stored picture's id, weight 1       (repeatable)
    part=KIND:WEIGHT:VALUE a weighted text or id, KIND text|id   (repeatable), e.g. part=text:-0.5:people
    picture_weight=W       the weight of the picture POSTed as the request's body (default 1)
    top_k=N  offset=N  min_score=S

Names and values are UTF-8 text, percent-encoded. Values are only ever parts of a gRPC request: the search
service checks them (ranges, ids, weights) and its refusal comes back as a 400 that names the item.
"""

import re
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qsl

from starlette.datastructures import QueryParams

from client import QueryPart

from .errors import ApiError

Number = TypeVar("Number", int, float)
PART_KINDS = ("text", "id")
# int() and float() also take "1_0", " 10", "+10" and other scripts' digits: numbers here are ASCII digits
# (a decimal's NaN and infinities are left for the search service to refuse, naming the part).
WHOLE_NUMBER = re.compile(r"-?[0-9]+")
DECIMAL = re.compile(r"-?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|nan|inf|infinity)", re.I)


@dataclass(frozen=True)
class SearchQuery:
    parts: list[QueryPart]
    top_k: int | None  # None: the page's own size
    offset: int
    min_score: float | None


def _number(text: str, name: str, kind: Callable[[str], Number]) -> Number:
    if (WHOLE_NUMBER if kind is int else DECIMAL).fullmatch(text):
        with suppress(ValueError):  # int() refuses more than 4,300 digits
            return kind(text)
    raise ApiError(400, f"{name} = {text!r} is not {'an integer' if kind is int else 'a number'}")


def _weighted_part(spec: str, index: int) -> QueryPart:
    kind, _, rest = spec.partition(":")
    weight, _, value = rest.partition(":")
    if kind not in PART_KINDS or not value:
        raise ApiError(
            400,
            f"part[{index}] = {spec!r} is not KIND:WEIGHT:VALUE with KIND text or id (e.g. text:-1:people)",
        )
    return QueryPart(**{kind: value}, weight=_number(weight, f"part[{index}] weight", float))


def _utf8_params(query_string: bytes) -> QueryParams:
    """The parameters of a raw query string; 400 naming the first that is not UTF-8 text (Starlette's own
    parsing puts U+FFFD in place of each bad byte, and `q=%FF` searched for that)."""
    pairs = []
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, encoding="latin-1"):
        try:
            pairs.append((name.encode("latin-1").decode(), value.encode("latin-1").decode()))
        except UnicodeDecodeError:
            shown = name.encode("latin-1").decode(errors="backslashreplace")
            raise ApiError(400, f"{shown} is not UTF-8 text: percent-encode its UTF-8 bytes") from None
    return QueryParams(pairs)


def parse_query(query_string: bytes, picture: bytes | None) -> SearchQuery:
    params = _utf8_params(query_string)
    parts = [
        *(QueryPart(text=text) for text in params.getlist("q")),
        *(QueryPart(id=image_id) for image_id in params.getlist("like")),
        *(_weighted_part(spec, index) for index, spec in enumerate(params.getlist("part"))),
    ]
    if picture is not None:
        parts.append(
            QueryPart(
                image=picture, weight=_number(params.get("picture_weight", "1"), "picture_weight", float)
            )
        )
    if not parts:
        raise ApiError(
            400, "nothing to search for: give q=TEXT, like=ID or part=KIND:WEIGHT:VALUE, or POST a picture"
        )
    top_k, min_score = params.get("top_k"), params.get("min_score", "")
    return SearchQuery(
        parts,
        None if top_k is None else _number(top_k, "top_k", int),
        _number(params.get("offset", "0"), "offset", int),
        _number(min_score, "min_score", float) if min_score else None,
    )

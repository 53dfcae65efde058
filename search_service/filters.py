"""Filter expressions with `{name}` placeholders, filled with values rendered as Milvus literals.

Milvus's own templates (`expr_params`) are not understood by Milvus Lite 2.5.1, so the service renders each
value itself, for Lite and servers alike. A rendered string literal escapes `\\` and `"`, the only two
characters with meaning inside one; line breaks cannot be expressed in a Milvus string at all and are refused.
A placeholder is only recognised outside string literals, so `uri like "{x}%"` keeps its braces.

What Milvus Lite would read otherwise than a Milvus server, read only in part, or not survive is refused by
`check_syntax` (filter_syntax.py), on the filter with its parameters filled in.
"""

import math
import re
from collections.abc import Iterator

from imagesearch.errors import invalid_argument
from imagesearch.v1 import search_pb2

from .filter_syntax import check_syntax

# Checking a filter costs the service about 2.5 s of CPU a megabyte: a list of 10,000 paths is about 0.5 MB.
MAX_FILTER_CHARS = 1 << 20
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_QUOTE = re.compile(r"[\"']")
# A list holds values of one type: numbers may mix, other kinds may not.
_TYPE_OF_KIND = {
    "string_value": "text",
    "int_value": "number",
    "float_value": "number",
    "bool_value": "true/false",
    "list_value": "list",
}


def render_value(name: str, value: search_pb2.FilterValue) -> str:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        text = value.string_value
        if "\n" in text or "\r" in text:
            raise invalid_argument(
                f"filter_params[{name!r}] contains a line break, which a Milvus filter cannot express"
            )
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if kind == "int_value":
        return str(value.int_value)
    if kind == "float_value":
        if not math.isfinite(value.float_value):
            raise invalid_argument(f"filter_params[{name!r}] is {value.float_value}, not a finite number")
        return repr(value.float_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "list_value":
        return _render_list(name, list(value.list_value.values))
    raise invalid_argument(f"filter_params[{name!r}] has no value")


def _render_list(name: str, values: list[search_pb2.FilterValue]) -> str:
    if not values:
        raise invalid_argument(
            f"filter_params[{name!r}] is an empty list, which Milvus Lite cannot evaluate: leave out the "
            "condition that uses it"
        )
    kinds = {item.WhichOneof("kind") for item in values}
    types = sorted({_TYPE_OF_KIND.get(kind or "", "nothing") for kind in kinds})
    if len(types) > 1:
        raise invalid_argument(
            f"filter_params[{name!r}] mixes {' and '.join(types)}: a field is compared with values of one "
            "type"
        )
    if kinds == {"int_value", "float_value"}:  # Lite fails on a list that mixes them; as floats, it matches
        values = [search_pb2.FilterValue(float_value=_as_float(item)) for item in values]
    return "[" + ", ".join(render_value(name, item) for item in values) + "]"


def _as_float(value: search_pb2.FilterValue) -> float:
    return float(value.int_value) if value.WhichOneof("kind") == "int_value" else value.float_value


def _string_literal_end(expression: str, start: int) -> int:
    """The index just past the string literal that opens at `start`."""
    quote, position = expression[start], start + 1
    while position < len(expression):
        if expression[position] == "\\":
            position += 2
        elif expression[position] == quote:
            return position + 1
        else:
            position += 1
    raise invalid_argument(
        f"filter has an unterminated string starting at character {start}: {expression[start:]!r}"
    )


def _pieces(expression: str) -> Iterator[tuple[int, str, bool]]:
    """The expression as (start, text, is a string literal) pieces, in order."""
    position = 0
    while position < len(expression):
        if expression[position] in "\"'":
            end = _string_literal_end(expression, position)
            yield position, expression[position:end], True
        else:
            quote = _QUOTE.search(expression, position)
            end = quote.start() if quote else len(expression)
            yield position, expression[position:end], False
        position = end


def _substitute(expression: str, params: dict[str, search_pb2.FilterValue]) -> str:
    pieces: list[str] = []
    used: set[str] = set()
    for start, text, literal in _pieces(expression):
        if literal:
            pieces.append(text)
            continue
        position = 0
        while position < len(text):
            match = _PLACEHOLDER.match(text, position)
            if match:
                name = match.group(1)
                if name not in params:
                    raise invalid_argument(f"filter uses {{{name}}} but filter_params has no {name!r}")
                pieces.append(render_value(name, params[name]))
                used.add(name)
                position = match.end()
                continue
            if text[position] in "{}":
                raise invalid_argument(
                    f"filter has a stray {text[position]!r} at character {start + position}: placeholders "
                    "are {name} with a matching filter_params entry"
                )
            pieces.append(text[position])
            position += 1
    unused = sorted(set(params) - used)
    if unused:
        raise invalid_argument(f"filter_params {unused} are not used by the filter {expression!r}")
    return "".join(pieces)


def _check_length(expression: str) -> None:
    if len(expression) > MAX_FILTER_CHARS:
        raise invalid_argument(
            f"filter is {len(expression)} characters with its parameters, over the limit of "
            f"{MAX_FILTER_CHARS}"
        )


def render_filter(expression: str, params: dict[str, search_pb2.FilterValue]) -> str:
    """`expression` with every `{name}` outside string literals replaced by the rendered `params[name]`."""
    _check_length(expression)
    rendered = _substitute(expression, params)
    _check_length(rendered)  # its parameters filled in
    check_syntax(rendered)
    return rendered

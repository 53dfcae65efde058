"""Filter expressions with `{name}` placeholders, filled with values rendered as Milvus literals.

Milvus's own templates (`expr_params`) are not understood by Milvus Lite 2.5.1, so the service renders each
value itself, for Lite and servers alike. A rendered string literal escapes `\\` and `"`, the only two
characters with meaning inside one; line breaks cannot be expressed in a Milvus string at all and are refused.
A placeholder is only recognised outside string literals, so `uri like "{x}%"` keeps its braces.
"""

import math
import re

from imagesearch.errors import invalid_argument
from imagesearch.v1 import search_pb2

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
        return "[" + ", ".join(render_value(name, item) for item in value.list_value.values) + "]"
    raise invalid_argument(f"filter_params[{name!r}] has no value")


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


def render_filter(expression: str, params: dict[str, search_pb2.FilterValue]) -> str:
    """`expression` with every `{name}` outside string literals replaced by the rendered `params[name]`."""
    pieces: list[str] = []
    used: set[str] = set()
    position = 0
    while position < len(expression):
        char = expression[position]
        if char in "\"'":
            end = _string_literal_end(expression, position)
            pieces.append(expression[position:end])
            position = end
            continue
        match = _PLACEHOLDER.match(expression, position)
        if match:
            name = match.group(1)
            if name not in params:
                raise invalid_argument(f"filter uses {{{name}}} but filter_params has no {name!r}")
            pieces.append(render_value(name, params[name]))
            used.add(name)
            position = match.end()
            continue
        if char in "{}":
            raise invalid_argument(
                f"filter has a stray {char!r} at character {position}: placeholders are {{name}} with a "
                "matching filter_params entry"
            )
        pieces.append(char)
        position += 1
    unused = sorted(set(params) - used)
    if unused:
        raise invalid_argument(f"filter_params {unused} are not used by the filter {expression!r}")
    return "".join(pieces)

"""The `like` patterns that Milvus Lite 2.5.1 matches otherwise than they mean, or too slowly, refused.

Lite matches `%` alone with nothing, compares a pattern with an escape as it is written (backslashes
included), reads a trailing `_` as `%`, and matches wildcards by backtracking in its one process.
"""

import re

from imagesearch.errors import invalid_argument

# A pattern of a million `%a` took 2.2 s of Lite's one process, holding up every other call.
MAX_WILDCARDS = 32
_WILDCARD = re.compile(r"(?<!\\)[%_]")
_WILDCARDS_ONLY = re.compile("[%_]+")


def check_like_pattern(literal: str) -> None:
    """Refuses (INVALID_ARGUMENT, saying why) the pattern that the string literal `literal` (quotes included,
    a u8/u/U/L prefix allowed) gives to a `like`."""
    quoted = literal.lstrip("u8UL")
    if _WILDCARDS_ONLY.fullmatch(quoted[1:-1]):
        raise invalid_argument(
            f"filter has the pattern like {quoted}, which matches every value (and none on Milvus Lite): "
            "leave out the condition"
        )
    pattern = _pattern(quoted)
    if misread := _misread_by_lite(pattern):
        raise invalid_argument(f"filter has the pattern like {quoted}, {misread}")
    wildcards = len(_WILDCARD.findall(pattern))
    if wildcards > MAX_WILDCARDS:
        raise invalid_argument(
            f"filter has a like pattern of {wildcards} wildcards, over the limit of {MAX_WILDCARDS}"
        )


def _pattern(quoted: str) -> str:
    """The pattern a quoted literal holds: Milvus removes the literal's own escapes first."""
    return re.sub(r"\\(.)", r"\1", quoted[1:-1], flags=re.DOTALL)


def _misread_by_lite(pattern: str) -> str:
    """Why Milvus Lite 2.5.1 would match `pattern` otherwise than it means, or "".

    Lite drops the pattern's trailing run of `%` and `_`; when what is left holds no wildcard, it compares
    that text as written (escapes included) for equality, or as a prefix if it dropped anything."""
    end = len(pattern)
    while end and pattern[end - 1] in "%_" and pattern[end - 2 : end - 1] != "\\":
        end -= 1
    if _WILDCARD.search(pattern[:end]):
        return ""  # a wildcard inside: Lite matches the whole pattern as it should
    if "\\" in pattern[:end]:
        return (
            "which Milvus Lite compares as it is written, escapes included, and so misses what it should "
            "match: compare with == for a whole value, or write _ (any one character) for each escaped "
            "character"
        )
    if "_" in pattern[end:]:
        return "whose trailing _ Milvus Lite reads as % (any number of characters, not one)"
    return ""

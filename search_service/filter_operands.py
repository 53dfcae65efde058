"""The filters that Milvus Lite 2.5.1 reads only in part, or that end its process and with it every call under
way, found by fuzzing it: its parser never checks for syntax errors, walks what it half-parsed, and folds
integer division without checking for zero. Each is refused, on every store alike:

- two operands with nothing joining them: Lite reads the filter up to there and drops the rest, so a typo
  (`uri like "%dogs%" nd ingested_at > 5`) deleted every dog, not the recent ones;

- a `like` not followed by a quoted pattern (`uri like 5`, `like true`, `like uri`; `uri like` alone matched
  nothing);
- an `in` or `not in` whose left side is not a field alone (`1 in [1]`, `ingested_at + 1 in [1]`, and
  `uri == "a" in [true]`, which it reads as `uri == ("a" in [true])`);
- `/` and `%` outside quotes: a divisor of 0 (`ingested_at / 0 == 1`, `1 % (5 - 5) == 0`, a `/` with no
  operand after it) ends the process;
- a function keyword not called with a field first and its number of arguments (`json_contains(metadata[
  "tags"])`, `array_length(1)`, `uri == json_contains`).

The tokens are Milvus's own (its lexer, Plan.g4): a field and its JSON keys (`metadata["a"]`) are one.
"""

import re
from dataclasses import dataclass

from imagesearch.errors import invalid_argument

_TOKEN = re.compile(
    r"""(?P<string>(?:u8|u|U|L)?(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'))
      | (?P<field>[A-Za-z_][A-Za-z0-9_]*(?:\[(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[0-9]+)\])*|\$meta)
      | (?P<number>\.?[0-9](?:[eEpP][-+]|[0-9A-Za-z_.])*)
      | (?P<operator>\*\*|<<|>>|&&|\|\||==|!=|<=|>=|\S)
      | \s+""",
    re.VERBOSE | re.DOTALL,
)
_KEYWORDS = {"and", "or", "not", "in", "like", "exists", "true", "false"}  # lower-cased
# What may come just before the field on the left of an `in`: the start, or what begins a condition.
_STARTS_A_CONDITION = {None, "(", "and", "or", "not", "&&", "||", "!"}
_USAGE = {
    "json_contains": 'json_contains(metadata["tags"], "a")',
    "json_contains_all": 'json_contains_all(metadata["tags"], ["a", "b"])',
    "json_contains_any": 'json_contains_any(metadata["tags"], ["a", "b"])',
    "array_contains": 'array_contains(metadata["tags"], "a")',
    "array_contains_all": 'array_contains_all(metadata["tags"], ["a", "b"])',
    "array_contains_any": 'array_contains_any(metadata["tags"], ["a", "b"])',
    "array_length": 'array_length(metadata["tags"])',
}


@dataclass(frozen=True)
class _Token:
    kind: str  # string, field, number or operator
    text: str
    end: int  # where it ends in the expression

    @property
    def word(self) -> str:
        """A keyword or a function's name as Milvus matches it (any case here: refusing more is safe)."""
        return self.text.lower() if self.kind == "field" else self.text

    def is_field(self) -> bool:
        return self.kind == "field" and self.word not in _KEYWORDS and self.word not in _USAGE

    def is_value(self) -> bool:
        return self.kind in ("string", "number") or self.is_field() or self.word in ("true", "false")

    def ends_an_operand(self) -> bool:
        return self.is_value() or self.text in (")", "]")

    def starts_an_operand(self) -> bool:
        return self.is_value() or self.text in ("(", "[") or self.word in ("exists", *_USAGE)


def _tokens(expression: str) -> list[_Token]:
    return [
        _Token(match.lastgroup, match.group(), match.end())
        for match in _TOKEN.finditer(expression)
        if match.lastgroup is not None
    ]


def check_operands(expression: str) -> None:
    """Refuses (INVALID_ARGUMENT, naming what it found) a filter that Milvus Lite would read only in part, or
    not survive; its brackets are balanced."""
    tokens = _tokens(expression)
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if following is not None and token.ends_an_operand() and following.starts_an_operand():
            raise invalid_argument(
                f"filter has {token.text + ' ' + following.text!r} with nothing joining them (and, or, a "
                "comparison): Milvus Lite would read the filter only up to there"
            )
        if token.word == "like" and (following is None or following.kind != "string"):
            after = expression[token.end :].strip()
            shown = f"like {after[:40]}" if after else "like with nothing after it"
            raise invalid_argument(
                f"filter has {shown}: like takes a pattern in quotes right after it, such as "
                'uri like "%/dogs/%" (a {name} placeholder there must be given text)'
            )
        if token.word == "in":
            _check_in(tokens, index, expression)
        if token.text in ("/", "%"):
            raise invalid_argument(
                f"filter divides ({token.text}), which this service refuses: a divisor of 0 ends the Milvus "
                "Lite process, and every call under way with it"
            )
        if token.word in _USAGE:
            _check_call(tokens, index)


def _check_in(tokens: list[_Token], index: int, expression: str) -> None:
    """The left side of the `in` at `index` (`not in` too) is a field alone, at the start of a condition."""
    field = index - 2 if index >= 2 and tokens[index - 1].word == "not" else index - 1
    before = tokens[field - 1].word if field >= 1 else None
    if field < 0 or not tokens[field].is_field() or before not in _STARTS_A_CONDITION:
        start = tokens[max(field - 2, 0)].end - len(tokens[max(field - 2, 0)].text)
        raise invalid_argument(
            f"filter has {expression[start : tokens[index].end].strip()!r}: in takes a field alone on its "
            'left, such as metadata["album"] in ["a", "b"] (anything else there ends the Milvus Lite process)'
        )


def _check_call(tokens: list[_Token], index: int) -> None:
    """The function named at `index` is called with a field first and as many arguments as it takes."""
    name, written = tokens[index].word, tokens[index].text
    if index + 1 == len(tokens) or tokens[index + 1].text != "(":
        raise invalid_argument(f"filter has {written} not called as a function: write {_USAGE[name]}")
    arguments: list[list[_Token]] = [[]]
    depth = 0
    for token in tokens[index + 2 :]:
        bracket = token.text if token.kind == "operator" else ""
        if bracket in ("(", "["):
            depth += 1
        elif bracket in (")", "]"):
            if depth == 0:
                break
            depth -= 1
        if depth == 0 and bracket == ",":
            arguments.append([])
        else:
            arguments[-1].append(token)
    count = 1 if name == "array_length" else 2
    first = arguments[0]
    if len(arguments) != count or not (len(first) == 1 and first[0].is_field()):
        raise invalid_argument(f"filter has {written}(…) with other arguments than {_USAGE[name]}")

"""The filters that Milvus Lite 2.5.1 reads only in part or otherwise than a Milvus server, or that end its
process and with it every call under way, most found by fuzzing it: its parser never checks for syntax errors,
walks what it half-parsed, and folds integer division without checking for zero. Each is refused, on every
store alike:

- a syntax error: Lite reads the filter up to it and drops the rest, so a typo's delete deleted more
  (`uri like "%dogs%" AND ingested_at > 5` deleted every dog: `AND` is a field's name to Milvus, which takes
  `and`), and so did a comma outside a list;
- a `like` not followed by a quoted pattern (`uri like 5`, `like true`, `like uri`);
- an `in` or `not in` whose left side is not a field alone (`1 in [1]`, `ingested_at + 1 in [1]`, and
  `uri == "a" in [true]`, which it reads as `uri == ("a" in [true])`);
- a list after `in` that is empty or mixes types (whole numbers and fractions too), which Lite fails on with
  an assertion of its engine;
- `/` and `%` but by a number other than 0, written out: a divisor of 0 (`ingested_at / 0 == 1`,
  `1 % (5 - 5) == 0`, `ingested_at / / 2`) ends the process;
- a function not called with a field first and its number of arguments (`json_contains(metadata["tags"])`,
  `array_length(1)`);
- unbalanced brackets (Lite takes them), brackets nested over MAX_DEPTH deep, and over MAX_OPERATORS
  `and`/`or`;
- a `like` pattern that Lite would match otherwise than it means, or too slowly (like_patterns.py).

The tokens and keywords are Milvus's own, in the cases its lexer takes (Plan.g4); a field and its JSON keys
(`metadata["a"]`) are one token.
"""

import re
from dataclasses import dataclass

from imagesearch.errors import invalid_argument

from .like_patterns import check_like_pattern

# Lite fails past about 50 `and`/`or`; a server parses for seconds past a few hundred.
MAX_OPERATORS = 32
# Lite's parser recurses: 50,000 nested brackets ended its process (10,000 did not).
MAX_DEPTH = 100

_TOKEN = re.compile(
    r"""(?P<string>(?:u8|u|U|L)?(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'))
      | (?P<word>(?:[A-Za-z_][A-Za-z0-9_]*|\$meta)
          (?:\[(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|0|[1-9][0-9]*)\])*)
      | (?P<number>0[xX](?:[0-9a-fA-F]*\.[0-9a-fA-F]+|[0-9a-fA-F]+\.?)[pP][-+]?[0-9]+|0[xX][0-9a-fA-F]+
          |0[bB][01]+|(?:[0-9]*\.[0-9]+|[0-9]+\.)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+|0[0-7]*|[1-9][0-9]*)
      | (?P<operator>\*\*|<<|>>|&&|\|\||==|!=|<=|>=|\S)
      | \s+""",
    re.VERBOSE | re.DOTALL,
)
_BINARY = {"==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "**", "<<", ">>", "&", "|", "^"}
_BINARY |= {"&&", "||", "and", "or", "like", "LIKE", "in"}
_UNARY = {"-", "+", "~", "!", "not", "exists", "EXISTS"}
_BOOLEANS = {"true", "True", "TRUE", "false", "False", "FALSE"}
# Each function as it is called, and how many arguments it takes.
_CALLS = {
    "json_contains": ('json_contains(metadata["tags"], "a")', 2),
    "json_contains_all": ('json_contains_all(metadata["tags"], ["a", "b"])', 2),
    "json_contains_any": ('json_contains_any(metadata["tags"], ["a", "b"])', 2),
    "array_contains": ('array_contains(metadata["tags"], "a")', 2),
    "array_contains_all": ('array_contains_all(metadata["tags"], ["a", "b"])', 2),
    "array_contains_any": ('array_contains_any(metadata["tags"], ["a", "b"])', 2),
    "array_length": ('array_length(metadata["tags"])', 1),
}
_FUNCTIONS = {written: name for name in _CALLS for written in (name, name.upper())}
_KEYWORDS = _BINARY | _UNARY | _BOOLEANS | set(_FUNCTIONS)
_LOWER_CASE_KEYWORDS = {"and", "or", "not", "in", "like", "exists"}
_JOINING = {"and", "or", "&&", "||"}
_OPENS = {")": "(", "]": "["}  # what each closing bracket closes
# What may come just before the field on the left of an `in`: the start, or what begins a condition.
_STARTS_A_CONDITION = {None, "(", "and", "or", "not", "&&", "||", "!"}


@dataclass(frozen=True)
class _Token:
    kind: str  # string, word, number or operator
    text: str
    start: int  # its place in the expression
    end: int

    def function(self) -> str | None:
        """The function this word calls, by its lower-case name; None for any other token."""
        return _FUNCTIONS.get(self.text) if self.kind == "word" else None

    def is_field(self) -> bool:
        return self.kind == "word" and self.text not in _KEYWORDS

    def is_value(self) -> bool:
        return self.kind in ("string", "number") or self.is_field() or self.text in _BOOLEANS


def _tokens(expression: str) -> list[_Token]:
    return [
        _Token(match.lastgroup, match.group(), match.start(), match.end())
        for match in _TOKEN.finditer(expression)
        if match.lastgroup is not None
    ]


def check_syntax(expression: str) -> None:
    """Refuses (INVALID_ARGUMENT, naming what it found) a filter that Milvus Lite would read only in part or
    otherwise than a server, or not survive."""
    tokens = _tokens(expression)
    closing = _check_structure(tokens, expression)
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if token.text in ("like", "LIKE") and (following is None or following.kind != "string"):
            after = expression[token.end :].strip()
            shown = f"like {after[:40]}" if after else "like with nothing after it"
            raise invalid_argument(
                f"filter has {shown}: like takes a pattern in quotes right after it, such as "
                'uri like "%/dogs/%" (a {name} placeholder there must be given text)'
            )
        if token.text == "in":
            _check_in(tokens, index, expression)
            _check_in_list(tokens, index, closing)
        if token.text in ("/", "%") and not (following is not None and _nonzero_number(following)):
            divisor = repr(following.text) if following else "nothing"
            raise invalid_argument(
                f"filter divides ({token.text}) by {divisor}: a divisor is a number other than 0, written "
                "out (a divisor of 0 ends the Milvus Lite process, and every call under way with it)"
            )
        if function := token.function():
            _check_call(tokens, index, function, closing)
    _check_alternation(tokens)


def _check_structure(tokens: list[_Token], expression: str) -> dict[int, int]:
    """Brackets balance and nest at most MAX_DEPTH deep, `and`/`or` come at most MAX_OPERATORS times, and
    each like pattern is one Lite reads as meant; checked first, as they bound what the other checks cost.
    Gives the index of each opening bracket's closing one."""
    open_brackets: list[int] = []
    closing: dict[int, int] = {}
    operators = 0
    for index, token in enumerate(tokens):
        text = token.text if token.kind == "operator" else ""
        if text in ("(", "["):
            open_brackets.append(index)
            if len(open_brackets) > MAX_DEPTH:
                raise invalid_argument(f"filter nests brackets over {MAX_DEPTH} deep")
        elif text in _OPENS:
            if not open_brackets or tokens[open_brackets[-1]].text != _OPENS[text]:
                raise invalid_argument(f"filter has an unmatched {text!r}: {expression!r}")
            closing[open_brackets.pop()] = index
        operators += token.text in _JOINING
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if token.text in ("like", "LIKE") and following is not None and following.kind == "string":
            check_like_pattern(following.text)
    if open_brackets:
        raise invalid_argument(f"filter has an unclosed {tokens[open_brackets[-1]].text!r}: {expression!r}")
    if operators > MAX_OPERATORS:
        raise invalid_argument(
            f"filter has {operators} and/or operators, over the limit of {MAX_OPERATORS}: compare with a "
            "list instead (`uri in {uris}`)"
        )
    return closing


def _check_in(tokens: list[_Token], index: int, expression: str) -> None:
    """The left side of the `in` at `index` (`not in` too) is a field alone, at the start of a condition."""
    field = index - 2 if index >= 2 and tokens[index - 1].text == "not" else index - 1
    before = tokens[field - 1].text if field >= 1 else None
    if field < 0 or not tokens[field].is_field() or before not in _STARTS_A_CONDITION:
        start = tokens[max(field - 2, 0)].start
        raise invalid_argument(
            f"filter has {expression[start : tokens[index].end]!r}: in takes a field alone on its left, such "
            'as metadata["album"] in ["a", "b"] (anything else there ends the Milvus Lite process)'
        )


def _check_in_list(tokens: list[_Token], index: int, closing: dict[int, int]) -> None:
    """The list after the `in` at `index` is not empty and its values are of one type, whole numbers and
    fractions apart: Lite fails on any other (a server answers), with an assertion from its engine."""
    if index + 1 == len(tokens) or tokens[index + 1].text != "[":
        return  # no list: the alternation check says what is wrong
    items = [item for item in _split_at_commas(tokens[index + 2 : closing[index + 1]]) if item]
    if not items:
        raise invalid_argument(
            "filter has an empty list after in, which Milvus Lite cannot evaluate: leave out the condition"
        )
    types = {_literal_type(item) for item in items} - {None}
    if len(types) > 1:
        listed = " and ".join(sorted(str(kind) for kind in types))
        advice = (
            "write each as a fraction (2.0)" if "fractions" in types else "compare with values of one type"
        )
        raise invalid_argument(
            f"filter has a list after in that mixes {listed}, which Milvus Lite fails on: {advice}"
        )


def _literal_type(item: list[_Token]) -> str | None:
    """What a list item written as a literal is (a number may have a sign); None for anything else."""
    *sign, value = item
    if sign and (len(sign) > 1 or sign[0].text not in ("-", "+") or value.kind != "number"):
        return None
    if value.kind == "string":
        return "text"
    if value.text in _BOOLEANS:
        return "true/false"
    if value.kind != "number":
        return None
    hexadecimal = value.text[:2].lower() == "0x"
    fraction = "." in value.text or ("p" if hexadecimal else "e") in value.text.lower()
    return "fractions" if fraction else "whole numbers"


def _nonzero_number(token: _Token) -> bool:
    """Whether `token` is a number literal other than 0 (its digits, before any exponent, not all 0)."""
    if token.kind != "number":
        return False
    digits = token.text[2:] if token.text[:2].lower() in ("0x", "0b") else token.text
    mantissa = re.split("[pP]" if token.text[:2].lower() == "0x" else "[eE]", digits)[0]
    return mantissa.strip("0.") != ""


def _check_call(tokens: list[_Token], index: int, name: str, closing: dict[int, int]) -> None:
    """The function `name`, at `index`, is called with a field first and as many arguments as it takes."""
    written, (usage, count) = tokens[index].text, _CALLS[name]
    if index + 1 == len(tokens) or tokens[index + 1].text != "(":
        raise invalid_argument(f"filter has {written} not called as a function: write {usage}")
    arguments = _split_at_commas(tokens[index + 2 : closing[index + 1]])
    first = arguments[0]
    if len(arguments) != count or not (len(first) == 1 and first[0].is_field()):
        raise invalid_argument(f"filter has {written}(…) with other arguments than {usage}")


def _split_at_commas(tokens: list[_Token]) -> list[list[_Token]]:
    """The tokens between a pair of brackets, parted at the commas not inside further brackets."""
    parts: list[list[_Token]] = [[]]
    depth = 0
    for token in tokens:
        bracket = token.text if token.kind == "operator" else ""
        if bracket in ("(", "["):
            depth += 1
        elif bracket in (")", "]"):
            depth -= 1
        if depth == 0 and bracket == ",":
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


def _check_alternation(tokens: list[_Token]) -> None:
    """Values and operators alternate, and commas part only a list's items or a call's arguments (brackets
    are balanced)."""
    expecting_value, open_brackets = True, []  # each "(", "[" or "call" still open
    previous: _Token | None = None
    for index, token in enumerate(tokens):
        text = token.text
        if expecting_value:
            if token.is_value():
                expecting_value = False
            elif text in ("(", "["):
                open_brackets.append("call" if previous is not None and previous.function() else text)
            elif text == "]" and previous is not None and previous.text in ("[", ","):  # [] and [1, 2,]
                open_brackets.pop()
                expecting_value = False
            elif not (text in _UNARY or token.function()):
                where = f"after {previous.text!r}" if previous else "at its start"
                raise invalid_argument(f"filter has {text!r} {where}, where a value belongs")
        elif text in (")", "]"):
            open_brackets.pop()
        elif text in _BINARY or (
            text == "not" and index + 1 < len(tokens) and tokens[index + 1].text == "in"
        ):
            expecting_value = text != "not"  # `not in`: a value comes after its `in`
        elif text == "," and open_brackets and open_brackets[-1] in ("[", "call"):
            expecting_value = True
        else:
            assert previous is not None  # a value came before: an operator is expected only after one
            raise invalid_argument(_unjoined(previous, token))
        previous = token
    if previous is not None and expecting_value:
        raise invalid_argument(f"filter ends with {previous.text!r}, where a value should follow")


def _unjoined(previous: _Token, token: _Token) -> str:
    """Why `token` cannot follow `previous`, a value."""
    for word in (previous, token):
        if word.kind == "word" and word.text.lower() in _LOWER_CASE_KEYWORDS and word.text not in _KEYWORDS:
            return (
                f"filter has {word.text!r}, which Milvus reads as a field's name: write {word.text.lower()}"
            )
    if token.text == ",":
        return f"filter has a comma outside a list or a function's arguments (after {previous.text!r})"
    shown = f"{previous.text} {token.text}"
    return (
        f"filter has {shown!r} with nothing joining them (and, or, a comparison): Milvus Lite would read the "
        "filter only up to there"
    )

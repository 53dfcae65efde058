"""Filter rendering without Milvus: placeholders, literals, and what is refused before Milvus sees it."""

from pathlib import Path

import pytest

from imagesearch.errors import ServiceError
from imagesearch.v1.search_pb2 import FilterValue, FilterValueList
from search_service.filter_syntax import MAX_DEPTH, MAX_OPERATORS
from search_service.filters import MAX_FILTER_CHARS, render_filter
from search_service.like_patterns import MAX_WILDCARDS


def text(value: str) -> FilterValue:
    return FilterValue(string_value=value)


def listed(*values: FilterValue) -> FilterValue:
    return FilterValue(list_value=FilterValueList(values=values))


def refusal(expression: str, **params: FilterValue) -> str:
    with pytest.raises(ServiceError) as refused:
        render_filter(expression, params)
    assert refused.value.code.name == "INVALID_ARGUMENT"
    return refused.value.message


def test_placeholders_become_escaped_literals_of_their_type() -> None:
    rendered = render_filter(
        'uri like {prefix} and metadata["year"] in {years} and metadata["ok"] == {ok} or x > {f}',
        {
            "prefix": text('%a "quoted" \\ path/%'),
            "years": listed(FilterValue(int_value=2023), FilterValue(float_value=2024.5)),
            "ok": FilterValue(bool_value=True),
            "f": FilterValue(float_value=0.25),
        },
    )
    assert rendered == (
        'uri like "%a \\"quoted\\" \\\\ path/%" and metadata["year"] in [2023.0, 2024.5] and '
        'metadata["ok"] == true or x > 0.25'
    )


def test_braces_inside_string_literals_are_text_not_placeholders() -> None:
    assert render_filter("uri like \"{x}%\" or uri == '{y}'", {}) == "uri like \"{x}%\" or uri == '{y}'"
    assert render_filter('uri == "a\\"{x}"', {}) == 'uri == "a\\"{x}"'  # an escaped quote ends no string


@pytest.mark.parametrize(
    ("expression", "params", "message"),
    [
        ("uri == {tag}", {}, "filter uses {tag} but filter_params has no 'tag'"),
        ("uri == 'x'", {"tag": text("x")}, "filter_params ['tag'] are not used"),
        ("uri == {", {}, "filter has a stray '{' at character 7"),
        ('uri == "open', {}, "filter has an unterminated string starting at character 7"),
        ("uri == {v}", {"v": text("two\nlines")}, "contains a line break"),
        ("uri == {v}", {"v": text("carriage\rreturn")}, "contains a line break"),
        ("x == {v}", {"v": FilterValue(float_value=float("nan"))}, "is nan, not a finite number"),
        ("x == {v}", {"v": FilterValue()}, "filter_params['v'] has no value"),
    ],
)
def test_malformed_placeholders_and_values_are_named(
    expression: str, params: dict[str, FilterValue], message: str
) -> None:
    assert message in refusal(expression, **params)


def test_an_empty_list_is_refused_rather_than_left_to_milvus_lite() -> None:
    assert "is an empty list" in refusal("uri in {uris}", uris=listed())


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("uri in []", "filter has an empty list after in, which Milvus Lite cannot evaluate"),
        ('uri not in ["a", 1]', "a list after in that mixes text and whole numbers"),
        ('metadata["n"] in [true, -2]', "mixes true/false and whole numbers"),
        (
            'metadata["n"] in [2, 2.5]',
            "mixes fractions and whole numbers, which Milvus Lite fails on: write each",
        ),
    ],
)
def test_a_written_list_that_milvus_lite_fails_on_is_refused_as_a_parameter_is(expression, message) -> None:
    """Only parameters were checked: a list written into the filter reached Lite, which failed with an
    assertion from its engine ('Cannot find field with field_id: 0 … segcore error')."""
    assert message in refusal(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "ingested_at in [-5, 5]",
        'uri in ["a",]',
        'metadata["n"] in [2.0, 2.5e1]',
        "metadata['n'] in [0x1e, 2]",
    ],
)
def test_a_written_list_of_one_type_is_taken(expression) -> None:
    assert render_filter(expression, {}) == expression


def test_a_list_of_mixed_types_is_refused_but_numbers_mix() -> None:
    assert "mixes number and text" in refusal("uri in {v}", v=listed(FilterValue(int_value=1), text("a")))
    assert render_filter("x in {v}", {"v": listed(FilterValue(int_value=1), FilterValue(float_value=2.5))})


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ('(uri == "a"', "filter has an unclosed '('"),
        ('uri == "a")', "filter has an unmatched ')'"),
        ("x in [1, 2", "filter has an unclosed '['"),
        ("(x in [1, 2)]", "filter has an unmatched ')'"),
    ],
)
def test_unbalanced_brackets_are_refused(expression: str, message: str) -> None:
    assert message in refusal(expression)


def test_brackets_inside_literals_do_not_count() -> None:
    assert render_filter('uri == "(" or uri == {v}', {"v": text(")]")}) == 'uri == "(" or uri == ")]"'


def test_at_most_max_operators_and_or_outside_literals() -> None:
    allowed = " or ".join(f"x == {n}" for n in range(MAX_OPERATORS + 1))
    assert render_filter(allowed, {}) == allowed
    assert render_filter('uri == "a and b or c"', {})
    over = " && ".join(f"x == {n}" for n in range(MAX_OPERATORS + 2))
    assert f"{MAX_OPERATORS + 1} and/or operators, over the limit of {MAX_OPERATORS}" in refusal(over)


def test_a_like_pattern_of_wildcards_alone_is_refused_however_it_is_written() -> None:
    for written in ('uri like "%"', "uri LIKE '%%'", "uri like {p}", 'uri like u8"%"'):
        assert "matches every value" in refusal(written, **({"p": text("_")} if "{p}" in written else {}))
    assert render_filter("uri like {p}", {"p": text("%.jpg")}) == 'uri like "%.jpg"'
    assert render_filter('uri == "%"', {}) == 'uri == "%"'


def test_a_like_pattern_of_more_wildcards_than_the_limit_is_refused() -> None:
    """Milvus Lite matched a million `%a` for 2.2 s in its one process, holding up every other call."""
    at_most = "uri like {p}", {"p": text("%a" * MAX_WILDCARDS)}
    assert render_filter(*at_most) == f'uri like "{"%a" * MAX_WILDCARDS}"'
    over = refusal("uri like {p}", p=text("%a" * (MAX_WILDCARDS + 1) + "\\_"))  # an escaped _ is no wildcard
    assert over == f"filter has a like pattern of {MAX_WILDCARDS + 1} wildcards, over the limit of 32"


def test_a_like_is_taken_only_with_a_quoted_pattern_right_after_it() -> None:
    said = refusal("uri like 5")
    assert said.startswith("filter has like 5: like takes a pattern in quotes right after it")
    assert refusal('uri like "a%" or uri LIKE (x)').startswith("filter has like (x):")
    assert "filter has like 2024:" in refusal("uri like {p}", p=FilterValue(int_value=2024))
    assert "filter has like with nothing after it:" in refusal('uri like "a%" and uri like')
    for taken in ("uri like \"a%\" and uri LIKE '%b'", 'metadata["like"] == 1', "unlike == 2"):
        assert render_filter(taken, {}) == taken


@pytest.mark.parametrize(
    ("expression", "refused"),
    [
        # Found by fuzzing Milvus Lite 2.5.1: each ended its process (a segfault, or SIGFPE for a division).
        ("1 in [1, 2]", "filter has '1 in': in takes a field alone on its left"),
        ('uri == "a" in [true]', "filter has 'uri == \"a\" in': in takes a field alone"),
        ("ingested_at + 1 not in [1]", "filter has 'ingested_at + 1 not in': in takes a field alone"),
        ('array_length(metadata["tags"]) in [1]', "in takes a field alone on its left"),
        ('uri == "x" or "a" in ["b"]', "in takes a field alone on its left"),
        ("ingested_at / 0 == 1", "filter divides (/) by '0': a divisor is a number other than 0, written"),
        ("1 % (5 - 5) == 0", "filter divides (%) by '('"),
        ("ingested_at / / 2 == 1", "filter divides (/) by '/'"),
        ("ingested_at / 0x0 == 1", "filter divides (/) by '0x0'"),
        ("(-9223372036854775807 - 1) % -1 == 0", "filter divides (%) by '-'"),
        ('json_contains(metadata["tags"])', "has json_contains(…) with other arguments than json_contains("),
        ('json_contains(metadata["tags"], "a", "b")', "has json_contains(…) with other arguments than"),
        ("1 == uri in [1]", "filter has '1 == uri in': in takes a field alone on its left"),
        ("array_length(1) == 2", "has array_length(…) with other arguments than array_length(metadata"),
        ("array_length() == 2", "has array_length(…) with other arguments"),
        ("uri == json_contains", "json_contains not called as a function: write json_contains(metadata"),
        ("ARRAY_CONTAINS_ANY == 1", "ARRAY_CONTAINS_ANY not called as a function"),
        # Lite read these only up to the gap and dropped the rest: a typo's delete deleted more.
        ('uri like "%dogs%" nd ingested_at > 5', "filter has '\"%dogs%\" nd' with nothing joining them"),
        ('uri == "a" "b"', 'filter has \'"a" "b"\' with nothing joining them (and, or, a comparison)'),
        ('metadata ["a"] == 1', "filter has 'metadata [' with nothing joining them"),
        ("(x == 1) (x == 2)", "filter has ') (' with nothing joining them"),
        # Lite read the number's digits and dropped the rest: `> 1_700_000_000` was `> 1`.
        ("ingested_at > 1_700_000_000", "filter has '1 _700_000_000' with nothing joining them"),
        ("ingested_at < 10k", "filter has '10 k' with nothing joining them"),
        ("ingested_at > 09", "filter has '0 9' with nothing joining them"),
        ("(" * (MAX_DEPTH + 1) + "x == 1" + ")" * (MAX_DEPTH + 1), "filter nests brackets over 100 deep"),
        (
            'uri like "%dogs%" AND ingested_at > 5',
            "filter has 'AND', which Milvus reads as a field's name: write and",
        ),
        ('uri IN ["a"]', "filter has 'IN', which Milvus reads as a field's name: write in"),
        ("ingested_at > 5, ingested_at < 2", "filter has a comma outside a list or a function's arguments"),
        ('and uri == "a"', "filter has 'and' at its start, where a value belongs"),
        ('uri == == "a"', "filter has '==' after '==', where a value belongs"),
        ('uri == "a" or', "filter ends with 'or', where a value should follow"),
    ],
)
def test_a_filter_that_would_end_milvus_lite_is_refused_naming_what(expression, refused) -> None:
    assert refused in refusal(expression)


def test_fields_functions_and_lists_are_taken_as_milvus_writes_them() -> None:
    for taken in (
        'metadata["album"] in ["a", "b"] and uri not in ["x"]',
        'not uri in ["a"] or (model in ["m"])',
        'json_contains(metadata["tags"], "a") and JSON_CONTAINS_ANY(metadata["tags"], ["a", "b"])',
        'array_length(metadata["tags"]) == 2 and array_contains_all(metadata["tags"], [1, 2])',
        'uri == "a/b%" and ingested_at * 2 > 10 and 1 < ingested_at < 5 and exists metadata["a"]',
        'not (uri like "x%" || -ingested_at < -5) && metadata["ok"] == True and uri in ["a", "b",]',
        "ingested_at % 2 == 0 and ingested_at / 0.5 > 1.5e3 and x == 0x1F and y != 0b101 and z < .5",
        "(" * MAX_DEPTH + "x == 1" + ")" * MAX_DEPTH,
        "(" * MAX_DEPTH + 'metadata["a"][0] == 1' + ")" * MAX_DEPTH,  # a field's keys are no nesting to Lite
    ):
        assert render_filter(taken, {}) == taken


def test_a_like_pattern_milvus_lite_would_read_wrongly_is_refused_saying_why() -> None:
    """A Windows folder's pattern matched nothing on Lite, which compared it with its escapes."""
    windows = refusal("uri like {p}", p=text("C:\\\\photos\\\\%"))
    assert windows.startswith(
        'filter has the pattern like "C:\\\\\\\\photos\\\\\\\\%", which Milvus Lite compares'
    )
    assert "compare with == for a whole value, or write _ (any one character)" in windows
    assert "trailing _ Milvus Lite reads as %" in refusal('uri like "pics/00_"')
    for read_right in ("C:_photos_%", "%\\\\photos\\\\%", "pics/0_.png", "pics/%", "%/100\\%"):
        assert render_filter("uri like {p}", {"p": text(read_right)})


def test_every_filter_found_to_end_milvus_lite_is_refused() -> None:
    """What a fuzzer found: each of these ended the Milvus Lite process, and every call under way with it."""
    found = Path(__file__).with_name("lite_killers.txt").read_text().split("\n")
    killers = [line for line in found if line and not line.startswith("#")]
    accepted = []
    for expression in killers:
        try:
            render_filter(expression, {})
        except ServiceError:
            continue
        accepted.append(expression)
    assert (len(killers), accepted) == (813, [])


def test_a_filter_over_the_length_limit_is_refused_before_it_is_read() -> None:
    """Checking one cost the service about 2.5 s of CPU a megabyte."""
    assert render_filter("uri == {p}", {"p": text("a" * (MAX_FILTER_CHARS - 9))})
    over = refusal("uri == {p}", p=text("a" * MAX_FILTER_CHARS))
    assert over == "filter is 1048585 characters with its parameters, over the limit of 1048576"

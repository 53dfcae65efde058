"""The command line and the SDK say what went wrong, with the right code, and never print a lie or a trace."""

import hashlib
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_operability import scrape
from test_search import picture

from client import (
    AsyncEncoderClient,
    AsyncSearchClient,
    EncoderClient,
    ImageSearchError,
    QueryPart,
    SearchClient,
)
from client.cli import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, EXIT_READER_GONE, EXIT_USAGE, main
from client.messages import search_options

NOWHERE = "127.0.0.1:1"  # refused before any connection is tried


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as usage:  # argparse's own usage errors
        code = int(usage.code or 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--param-json", 'a={"x":1}'], "filter parameter 'a' is dict {'x': 1}; use text, a number"),
        (["--param-json", "a=null"], "filter parameter 'a' is NoneType None"),
        (["--param-json", "a=99999999999999999999999"], "= 99999999999999999999999 does not fit in a 64-bit"),
        (["--param-json", "a=[1, {}]"], "filter parameter 'a'[1] is dict {}"),
        (["--param-json", "a=[1,"], "--param-json 'a=[1,': Expecting value"),
        (["--param", "a=1", "--param", "a=2"], "--param a=... is given twice"),
        (["--param", "a=1", "--param-json", "a=2"], "'a' is given both as text and as JSON"),
        (["--top-k", "0"], "top_k = 0 is not a whole number from 1 to 2147483647"),
        (["--offset", "-1"], "offset = -1 is not a whole number from 0"),
        (["--min-score", "2"], "min_score = 2.0 is outside -1..1"),
        (["--min-score", "nan"], "min_score = nan is outside -1..1"),
        (["--param", "a=caf\udce9"], "filter parameter 'a' = 'caf\\udce9' is not UTF-8 text"),
    ],
)
def test_bad_arguments_are_usage_errors_with_a_message(capsys, arguments, message) -> None:
    code, out, err = cli(capsys, "--server", NOWHERE, "search", "a dog", "--filter", "{a}", *arguments)
    assert (code, out) == (EXIT_USAGE, "") and message in err


def test_the_sdk_refuses_what_it_cannot_send_with_its_own_error() -> None:
    with SearchClient(NOWHERE) as client:
        for call, message in (
            (lambda: client.search_text("a", top_k=2**40), "top_k = 1099511627776 is not a whole number"),
            (lambda: client.search_text("a", filter="{p}", filter_params={"p": {"x": 1}}), "is dict"),
            (lambda: client.delete(), "delete needs either ids or a filter"),
            (lambda: client.search_text("a", min_score="0.1"), "min_score = '0.1' is not a number"),
            (lambda: client.search_text("caf\udce9"), "text = 'caf\\udce9' is not UTF-8 text"),
            (lambda: client.ingest([], metadata={"a": "\udcff"}), "metadata['a'] = '\\udcff' is not UTF-8"),
            (  # before a file is read: the service would fail every picture for it, one by one
                lambda: client.ingest([], metadata={"notes": "é" * 40_000}),
                "metadata is 80012 bytes as JSON, over the limit of 65536 bytes",
            ),
        ):
            with pytest.raises(ImageSearchError) as refused:
                call()
            assert refused.value.code.name == "INVALID_ARGUMENT" and message in refused.value.message


def test_the_sdk_refuses_an_argument_of_the_wrong_type_with_its_own_error() -> None:
    """Each was a bare AttributeError or TypeError from deep inside, or a bytearray taken for a path."""
    with SearchClient(NOWHERE) as client:
        for call, message in (
            (lambda: client.search_text(None), "text = None is not text"),
            (lambda: client.search_text(b"a dog"), "text = b'a dog' is not text"),
            (lambda: client.search_text("a", filter=5), "filter = 5 is not text"),
            (lambda: client.search(["a dog"]), "parts[0] = 'a dog' is not a QueryPart: QueryPart(text=...)"),
            (lambda: client.search("a dog"), "parts = 'a dog' is a text, not a list of QueryPart"),
            (lambda: client.search(None), "parts = None is not a list of QueryPart"),
            (lambda: client.search_similar(123), "QueryPart id = 123 is not text"),
            (lambda: QueryPart(text="a", weight="2"), "QueryPart weight = '2' is not a number"),
            (lambda: client.get(5), "ids = 5 is neither an id (text) nor a list of ids"),
            (lambda: client.delete(ids=["a", 5]), "ids[1] = 5 is not text"),
            (lambda: client.thumbnail(5), "id = 5 is not text"),
            (lambda: client.search_image(7), "7 is neither a picture's bytes nor the path of a picture file"),
            (lambda: SearchClient(None), "target = None is not the address of a service (host:port)"),
            (lambda: SearchClient(NOWHERE, token=b"secret"), "token is bytes, not text"),
        ):
            with pytest.raises(ImageSearchError) as refused:
                call()
            assert refused.value.code.name == "INVALID_ARGUMENT" and message in refused.value.message


def test_the_sdk_takes_numpy_scores_a_bytearray_picture_a_lone_part_and_a_set_of_ids(
    search, tmp_path
) -> None:
    """np.float32 was refused as "not a number" (np.int64 was taken), a bytearray was read as a path, and a
    lone QueryPart raised TypeError (a lone path, id or text is taken where a list is)."""
    with SearchClient(search.grpc.address, collection="typed") as client:
        (tmp_path / "a.png").write_bytes(picture(170))
        assert client.ingest(tmp_path).stored == 1
        for score in (np.float32(-1), np.float64(-1), np.int8(-1)):
            assert len(client.search_text("a picture", min_score=score)) == 1
        [hit] = client.search_image(bytearray(picture(170)))
        assert hit.uri == str(tmp_path / "a.png")
        assert [found.id for found in client.search(QueryPart(image=tmp_path / "a.png"))] == [hit.id]
        assert [record.uri for record in client.get({hit.id})] == [hit.uri]


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), 1e10, "5", True])
def test_a_client_refuses_a_timeout_that_is_no_number_of_seconds(timeout) -> None:
    """It was taken, and every call failed DEADLINE_EXCEEDED blaming the service (or raised TypeError); past
    about 9e9 s gRPC's deadline overflowed, and every call failed at once."""
    for client_type in (SearchClient, EncoderClient, AsyncSearchClient, AsyncEncoderClient):
        with pytest.raises(ImageSearchError) as refused:
            client_type(NOWHERE, timeout=timeout)
        assert refused.value.code.name == "INVALID_ARGUMENT"
        assert refused.value.message == (
            f"timeout = {timeout!r} is not a number of seconds above 0, at most 1e+09 (or None: no deadline)"
        )


def test_a_numpy_whole_number_is_a_whole_number_and_a_float_is_not() -> None:
    options = search_options("", np.int64(3), np.int32(2), None, None, (), None)
    assert (options.top_k, options.offset) == (3, 2)
    with pytest.raises(ImageSearchError, match=r"top_k = 3.0 is not a whole number"):
        search_options("", 3.0, 0, None, None, (), None)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--timeout", "0", "stats"], "argument --timeout: '0' is not a positive number of seconds"),
        (["--timeout", "inf", "stats"], "argument --timeout: 'inf' is not a positive number of seconds"),
        (["--timeout", "1e10", "stats"], "'1e10' is not a positive number of seconds, at most 1e+09"),
        (["search", "caf\udce9"], "'caf\\udce9' is not UTF-8 text"),
        (["up", "--encoder-port", "70000"], "argument --encoder-port: '70000' is not a port"),
        (["up", "--web-port", "-1"], "argument --web-port: '-1' is not a port"),
        (
            ["up", "--search-metrics-port", "-2"],
            "argument --search-metrics-port: '-2' is not a port (1 to 65535, 0: any free one, or -1: none)",
        ),
    ],
)
def test_arguments_no_call_could_use_are_usage_errors(capsys, arguments, message) -> None:
    code, out, err = cli(capsys, "--server", NOWHERE, *arguments)
    assert (code, out) == (EXIT_USAGE, "") and message in err


def test_a_tag_that_is_not_utf8_is_refused_before_anything_is_sent(capsys, tmp_path) -> None:
    (tmp_path / "a.png").write_bytes(picture(150))
    code, _, err = cli(capsys, "--server", NOWHERE, "ingest", str(tmp_path), "--tag", "album=caf\udce9")
    assert code == EXIT_USAGE and "metadata['album'] = 'caf\\udce9' is not UTF-8 text" in err


def test_a_message_that_quotes_a_name_cannot_break_the_line_or_color_it(capsys, tmp_path) -> None:
    name = tmp_path / "no\nsuch\x1b[31m"
    code, _, err = cli(capsys, "--server", NOWHERE, "ingest", str(name))
    assert code == EXIT_USAGE and f"no such file or folder: {tmp_path}/no\\nsuch\\x1b[31m" in err
    assert "\x1b" not in err and "no\nsuch" not in err


def test_a_grid_is_a_png_whatever_its_name_and_a_folder_is_refused_before_searching(
    search, capsys, tmp_path
) -> None:
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "a.png").write_bytes(picture(160))
    server = ["--server", search.grpc.address, "--collection", "grids"]
    assert cli(capsys, *server, "ingest", str(tmp_path / "pictures"), "--no-progress")[0] == EXIT_OK
    for name in ("sheet", "sheet.txt"):
        code, _, _ = cli(capsys, *server, "search", "x", "--grid", str(tmp_path / name))
        assert code == EXIT_OK and Image.open(tmp_path / name).format == "PNG"
    code, out, err = cli(capsys, *server, "search", "x", "--grid", str(tmp_path))
    assert (code, out) == (EXIT_USAGE, "") and f"--grid {tmp_path} is a folder" in err
    # A file where a folder is wanted failed after the search, with a bare "[Errno 17] File exists"; an empty
    # name wrote nothing, silently.
    in_the_way = tmp_path / "pictures" / "a.png"
    code, out, err = cli(capsys, *server, "search", "x", "--grid", f"{in_the_way}/sheet.png")
    assert (code, out) == (EXIT_USAGE, "") and f"{in_the_way} is a file, not a folder" in err
    code, out, err = cli(capsys, *server, "search", "x", "--grid", "")
    assert (code, out) == (EXIT_USAGE, "") and "--grid needs the name of the PNG file to write" in err
    code, _, err = cli(capsys, *server, "search", "x", "--grid", "/proc/sheet.png")  # procfs makes no file
    assert code == EXIT_FAILED and "imgsearch: --grid /proc/sheet.png cannot be written: " in err


def test_image_given_as_a_folder_is_a_message(capsys, tmp_path) -> None:
    code, _, err = cli(capsys, "--server", NOWHERE, "search", "--image", str(tmp_path))
    assert code == EXIT_USAGE and f"{tmp_path}: not a regular file (a folder)" in err


def test_typed_tags_filter_as_numbers_and_a_tag_given_twice_is_refused(search, capsys, tmp_path) -> None:
    (tmp_path / "old.png").write_bytes(picture(100))
    (tmp_path / "new.png").write_bytes(picture(101))
    server = ["--server", search.grpc.address, "--collection", "typed"]
    for name, year in (("old.png", 2019), ("new.png", 2024)):
        tags = ["--tag", "album=trip", "--tag-json", f"year={year}", "--tag-json", "keep=true"]
        assert cli(capsys, *server, "ingest", str(tmp_path / name), *tags, "--no-progress")[0] == EXIT_OK
    code, out, _ = cli(
        capsys,
        *server,
        "search",
        "x",
        "--filter",
        'metadata["year"] > {y}',
        "--param-json",
        "y=2020",
        "--json",
    )
    [hit] = json.loads(out)
    assert code == EXIT_OK and hit["uri"].endswith("new.png")
    assert hit["metadata"] == {"album": "trip", "year": 2024, "keep": True}
    code, _, err = cli(capsys, *server, "ingest", str(tmp_path), "--tag", "a=1", "--tag", "a=2")
    # With the usage of the command at fault, not the top-level one's.
    assert code == EXIT_USAGE and "imgsearch ingest: error: --tag a=... is given twice" in err
    assert err.startswith("usage: imgsearch ingest [-h]")


def test_json_output_has_totals_and_no_empty_fields(search, capsys, tmp_path) -> None:
    (tmp_path / "p.png").write_bytes(picture(110))
    (tmp_path / "notes.txt").write_text("words")
    server = ["--server", search.grpc.address, "--collection", "json"]
    code, out, _ = cli(capsys, *server, "ingest", str(tmp_path), "--json", "--no-progress")
    report = json.loads(out)
    assert code == EXIT_OK
    assert {key: report[key] for key in ("total", "stored", "present", "failed", "skipped")} == {
        "total": 2,
        "stored": 1,
        "present": 0,
        "failed": 0,
        "skipped": 1,
    }
    [hit] = json.loads(cli(capsys, *server, "search", "x", "--json")[1])
    assert set(hit) == {"id", "uri", "metadata", "score"}


def test_names_with_control_characters_cannot_fake_rows(search, capsys, tmp_path) -> None:
    fake = "a\n   2   0.9999  fake\x1b[2K.png"
    (tmp_path / fake).write_bytes(picture(120))
    server = ["--server", search.grpc.address, "--collection", "names"]
    assert cli(capsys, *server, "ingest", str(tmp_path), "--no-progress")[0] == EXIT_OK
    code, out, _ = cli(capsys, *server, "search", "x")
    assert code == EXIT_OK and len(out.splitlines()) == 2
    assert "a\\n   2   0.9999  fake\\x1b[2K.png" in out


def test_filters_milvus_refuses_are_invalid_argument_and_asked_once(search, capsys) -> None:
    server = ["--server", search.grpc.address, "--collection", "filters"]
    (Path(search.config.milvus_uri).parent / "f.png").write_bytes(picture(130))
    assert cli(capsys, *server, "ingest", str(Path(search.config.milvus_uri).parent / "f.png"))[0] == EXIT_OK
    before = scrape(search.grpc.metrics.server_port)
    refused = {
        "is an empty list": ["search", "x", "--filter", "uri in {u}", "--param-json", "u=[]"],
        "mixes number and text": ["search", "x", "--filter", "uri in {u}", "--param-json", 'u=[1, "a"]'],
        "Milvus refused the filter": ["delete", "--filter", "true", "--yes"],
        "over the limit of 32": ["search", "x", "--filter", " or ".join(['uri == "a"'] * 40)],
        "unclosed '('": ["search", "x", "--filter", '(uri == "a"'],
        "matches every value": ["search", "x", "--filter", 'uri like "%"'],
    }
    for message, command in refused.items():
        code, _, err = cli(capsys, *server, *command)
        assert code == EXIT_FAILED and "INVALID_ARGUMENT: " in err and message in err, (message, err)
    after = scrape(search.grpc.metrics.server_port)
    for method, calls in (("Search", 5), ("Delete", 1)):
        key = ("grpc_server_handled_total", (("code", "INVALID_ARGUMENT"), ("method", method)))
        assert after[key] - before.get(key, 0) == calls, method  # none retried


def test_get_names_the_ids_that_are_not_stored_and_says_so_in_its_exit_code(search, capsys, tmp_path) -> None:
    """An unknown id used to print [] (or be left out of the list) with exit 0."""
    (tmp_path / "kept.png").write_bytes(picture(150))
    server = ["--server", search.grpc.address, "--collection", "getting"]
    assert cli(capsys, *server, "ingest", str(tmp_path), "--no-progress")[0] == EXIT_OK
    stored, unknown = hashlib.sha256(picture(150)).hexdigest(), "f" * 64
    code, out, err = cli(capsys, *server, "get", stored, unknown)
    assert (code, [record["id"] for record in json.loads(out)]) == (EXIT_PARTIAL, [stored])
    assert err == f"imgsearch: not stored: {unknown}\n"
    code, out, err = cli(capsys, *server, "get", unknown)
    assert (code, json.loads(out), err) == (EXIT_FAILED, [], f"imgsearch: not stored: {unknown}\n")
    assert cli(capsys, *server, "get", stored)[0] == EXIT_OK


def test_no_hits_for_a_number_given_as_text_say_how_to_give_a_number(search, capsys, tmp_path) -> None:
    """`--param year=2024` compared with a year stored as a number matched nothing, and nothing said why."""
    (tmp_path / "p.png").write_bytes(picture(160))
    server = ["--server", search.grpc.address, "--collection", "typed"]
    tagged = ["ingest", str(tmp_path), "--tag-json", "year=2024", "--tag", "album=x", "--no-progress"]
    assert cli(capsys, *server, *tagged)[0] == EXIT_OK
    query = [*server, "search", "a picture", "--filter", 'metadata["year"] == {y}']
    code, out, err = cli(capsys, *query, "--param", "y=2024")
    assert (code, out) == (EXIT_OK, "no hits\n")
    assert err == (
        "imgsearch: no hits; --param y=2024 is text to the filter, and text matches no number or true/false "
        "in metadata: --param-json y=2024 gives it a number\n"
    )
    code, out, err = cli(capsys, *query, "--param-json", "y=2024")
    assert code == EXIT_OK and "p.png" in out and err == ""
    album = [*server, "search", "a picture", "--filter", 'metadata["album"] == {a}', "--param", "a=y"]
    assert cli(capsys, *album) == (EXIT_OK, "no hits\n", "")  # no number given as text: nothing to say


def test_delete_by_filter_on_a_terminal_asks_first(search, capsys, tmp_path) -> None:
    for index in range(3):
        (tmp_path / f"{index}.png").write_bytes(picture(140 + index))
    server = ["--server", search.grpc.address, "--collection", "asking"]
    assert cli(capsys, *server, "ingest", str(tmp_path), "--no-progress")[0] == EXIT_OK
    delete = [*server, "delete", "--filter", "uri like {p}", "--param", f"p={tmp_path}/%"]
    code, said, left = _on_a_terminal(delete, answer="n")
    assert (code, left) == (EXIT_FAILED, 3)
    asked = f'delete 3 pictures that match uri like {{p}}, p = "{tmp_path}/%"? [y/N]'  # {p} was left blank
    assert asked in said and "nothing deleted" in said
    code, said, left = _on_a_terminal(delete, answer="\x04")  # Ctrl-D
    assert (code, left) == (EXIT_FAILED, 3) and "nothing deleted" in said and "Traceback" not in said
    code, said, left = _on_a_terminal(delete, answer="y")
    assert (code, left) == (EXIT_OK, 0) and "deleted 3" in said


def _on_a_terminal(args: list[str], answer: str) -> tuple[int, str, int]:
    """Runs `imgsearch ARGS` on a terminal and answers its question: the exit code, what it wrote, and how
    many pictures are left in the collection."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "client.cli", *args], stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    os.write(leader, f"{answer}\n".encode())
    code = process.wait(timeout=60)
    said = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closes with the process
            break
        if not chunk:
            break
        said += chunk
    os.close(leader)
    with SearchClient(args[1], collection=args[3]) as client:
        return code, said.decode(), client.stats().count


def test_a_path_that_is_not_there_is_refused_before_anything_is_sent(capsys, tmp_path) -> None:
    code, _, err = cli(capsys, "--server", NOWHERE, "ingest", str(tmp_path / "nowhere"))
    assert code == EXIT_USAGE and f"imgsearch: no such file or folder: {tmp_path / 'nowhere'}" in err
    with SearchClient(NOWHERE) as client, pytest.raises(ImageSearchError) as refused:
        client.ingest([tmp_path / "nowhere"])
    assert refused.value.code.name == "INVALID_ARGUMENT"


def test_a_reader_that_stops_reading_ends_the_command_quietly(tiny_encoder) -> None:
    """`imgsearch ... | head` ended with "imgsearch: [Errno 32] Broken pipe" (or Python's own complaint)."""
    reader, writer = os.pipe()
    os.close(reader)  # nobody reads what the command writes
    try:
        done = subprocess.run(
            [sys.executable, "-m", "client.cli", "--encoder", tiny_encoder.grpc.address, "encode", "a dog"],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(writer)
    assert (done.returncode, done.stderr) == (EXIT_READER_GONE, "")

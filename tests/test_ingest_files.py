"""No file under the paths can abort, stall or silently skip part of an ingest; each is reported by path.

Ingests run the real command line as a separate process in which file permissions apply (as root, without
the capabilities that bypass them), against real services on loopback.
"""

import asyncio
import json
import os
import signal
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cli_process import run_cli
from conftest import encoder_process, running_encoder, running_search, search_stub, service_process
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_client import assert_tiles
from test_search import picture

from client import AsyncSearchClient, ImageSearchError, IngestInterrupted, IngestSummary, SearchClient
from client.cli import EXIT_FAILED, EXIT_PARTIAL, main
from client.files import uri_of
from client.ingest import Ingestion
from client.local import free_port
from client.models import Limits
from imagesearch.v1 import search_pb2

MAX_IMAGE_BYTES = 200_000


@pytest.fixture(scope="module")
def small_limit_encoder(tiny_path) -> Iterator[str]:
    """An encoder that takes pictures of up to MAX_IMAGE_BYTES, so that a file over it is cheap to make."""
    with running_encoder(tiny_path, max_image_bytes=MAX_IMAGE_BYTES, max_items_per_request=8) as encoder:
        yield encoder.grpc.address


@pytest.fixture(scope="module")
def search_address(small_limit_encoder, tmp_path_factory) -> Iterator[str]:
    with running_search(small_limit_encoder, tmp_path_factory.mktemp("files") / "milvus.db") as search:
        yield search.grpc.address


def ingest_json(address: str, *paths: Path, collection: str) -> tuple[int, dict]:
    done = run_cli("--server", address, "--collection", collection, "ingest", *map(str, paths), "--json")
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def outcomes(report: dict) -> dict[str, tuple[str, str]]:
    return {item["uri"]: (item["outcome"], item.get("error", "")) for item in report["items"]}


def too_large() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + os.urandom(MAX_IMAGE_BYTES + 1000)


def test_every_kind_of_entry_is_reported_and_only_pictures_are_stored(search_address, tmp_path) -> None:
    folder = tmp_path / "photos"
    (folder / "inner").mkdir(parents=True)
    (folder / "a.png").write_bytes(picture(1))
    (folder / "inner" / "b.png").write_bytes(picture(2))
    (folder / "big.png").write_bytes(too_large())
    (folder / "notes.txt").write_text("not a picture")
    os.mkfifo(folder / "pipe.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "gone.png").symlink_to(folder / "missing.png")
    (folder / "elsewhere").symlink_to(tmp_path)
    (folder / "secret.png").write_bytes(picture(3))
    (folder / "secret.png").chmod(0)
    (folder / "closed").mkdir()
    (folder / "closed" / "hidden.png").write_bytes(picture(4))
    (folder / "closed").chmod(0)
    (folder / "line\nbreak.png").write_bytes(picture(5))
    (folder / os.fsdecode(b"caf\xe9.png")).write_bytes(picture(6))

    code, report = ingest_json(search_address, folder, collection="kinds")

    assert code == EXIT_PARTIAL
    failed = {
        Path(uri).name: error for uri, (outcome, error) in outcomes(report).items() if outcome == "failed"
    }
    assert failed == {
        "big.png": f"{MAX_IMAGE_BYTES + 1008} bytes is over the limit of {MAX_IMAGE_BYTES} bytes",
        "pipe.png": "not a regular file (a named pipe)",
        "zero.png": "not a regular file (a character device)",
        "gone.png": "cannot read: a broken link",
        "elsewhere": "a link to a folder, not followed: name the folder itself to ingest it",
        "secret.png": "cannot open: Permission denied",
        "closed": "cannot list this folder: Permission denied",
    }
    stored = sorted(uri for uri, (outcome, _) in outcomes(report).items() if outcome == "stored")
    assert stored == sorted(
        uri_of(folder / name)
        for name in ["a.png", "inner/b.png", "line\nbreak.png", os.fsdecode(b"caf\xe9.png")]
    )
    assert all(Path(uri).is_absolute() for uri in outcomes(report))
    assert (report["total"], report["stored"], report["failed"], report["skipped"]) == (12, 4, 7, 1)
    with SearchClient(search_address, collection="kinds") as client:
        assert client.stats().count == 4


def test_one_file_too_large_for_a_message_fails_alone(small_limit_encoder, tmp_path) -> None:
    """The search service's message limit, not only the encoder's image limit, is checked before sending."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        (folder / f"{index}.png").write_bytes(picture(10 + index))
    (folder / "1-huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(600_000))
    with running_search(small_limit_encoder, tmp_path / "milvus.db", max_message_bytes=400_000) as search:
        code, report = ingest_json(search.grpc.address, folder, collection="messages")
    assert code == EXIT_PARTIAL and (report["stored"], report["failed"]) == (3, 1)
    [(huge, error)] = [(uri, item[1]) for uri, item in outcomes(report).items() if item[0] == "failed"]
    assert huge.endswith("1-huge.png") and "over the limit of" in error


def test_an_ingest_where_every_item_failed_exits_1_not_3(search_address, tmp_path) -> None:
    """Exit 3 says that the rest was done: `ingest broken.jpg` said so of nothing."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(picture(7)[:60])
    code, report = ingest_json(search_address, broken, collection="all_failed")
    assert (code, report["failed"], report["stored"]) == (EXIT_FAILED, 1, 0)
    (tmp_path / "whole.png").write_bytes(picture(8))
    code, report = ingest_json(search_address, tmp_path, collection="all_failed")
    assert (code, report["failed"], report["stored"]) == (EXIT_PARTIAL, 1, 1)


def test_a_file_that_changes_while_the_ingest_runs_fails_alone(search_address, tmp_path) -> None:
    """Entries are found first and read as they are sent: one removed meanwhile, or turned into a named
    pipe, is a failed item, and the rest goes on."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.txt").write_text("settled by the client first, before b and c are read")
    (folder / "b.png").write_bytes(picture(20))
    (folder / "c.png").write_bytes(picture(21))
    (folder / "d.png").write_bytes(picture(22))

    def meddle(item, summary) -> None:  # type: ignore[no-untyped-def]
        if item.uri.endswith("a.txt"):
            (folder / "b.png").unlink()
            (folder / "c.png").unlink()
            os.mkfifo(folder / "c.png")

    with SearchClient(search_address, collection="changing") as client:
        summary = client.ingest([folder], progress=meddle)
    by_name = {Path(item.uri).name: (item.outcome, item.error) for item in summary.items}
    assert by_name == {
        "a.txt": ("skipped", "not a picture (by its content)"),
        "b.png": ("failed", "cannot open: No such file or directory"),
        "c.png": ("failed", "not a regular file (a named pipe)"),
        "d.png": ("stored", ""),
    }


def test_a_file_named_itself_that_is_no_picture_fails_and_an_entry_named_twice_counts_once(
    search_address, tmp_path, capsys
) -> None:
    """`imgsearch ingest notes.jpg` said "skipped 1" and exited 0, naming nothing; `ingest pics pics` counted
    every picture twice. A file in a named folder is named too when it is also named itself, in any order."""
    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "a.png").write_bytes(picture(40))
    (folder / "notes.txt").write_text("words")
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("words")
    with SearchClient(search_address, collection="named") as client:
        named = [folder, folder / "notes.txt", folder, folder / "a.png", tmp_path / "zero.jpg"]
        summary = client.ingest([*named, tmp_path / "text.jpg"])
    by_uri = {item.uri: (item.outcome, item.error) for item in summary.items}
    assert summary.total == 4 and by_uri == {
        uri_of(folder / "a.png"): ("stored", ""),
        uri_of(folder / "notes.txt"): ("failed", "not a picture (by its content)"),  # named, after its folder
        uri_of(tmp_path / "zero.jpg"): ("failed", "an empty file"),
        uri_of(tmp_path / "text.jpg"): ("failed", "not a picture (by its content)"),
    }
    code = main(["--server", search_address, "--collection", "named", "ingest", str(tmp_path / "text.jpg")])
    assert code == EXIT_FAILED
    assert f"FAILED  {tmp_path / 'text.jpg'}: not a picture (by its content)" in capsys.readouterr().out


def test_avif_photos_are_stored_and_phones_heic_ones_fail_naming_why(search_address, tmp_path) -> None:
    """Both were skipped as "not a picture" and never named, though the encoder reads AVIF."""
    folder = tmp_path / "phone"
    folder.mkdir()
    Image.new("RGB", (96, 64), (30, 160, 90)).save(folder / "IMG_0001.avif", "AVIF")
    # What an iPhone writes: an ISO media file whose `ftyp` box says HEIC; Pillow has no decoder for it.
    (folder / "IMG_0002.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    # Another writer's: HEIF's own brand first, HEIC only among the compatible ones.
    (folder / "IMG_0003.HEIC").write_bytes(b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic" + bytes(64))
    Image.new("RGB", (8, 8)).save(folder / "icon.ico", "ICO")  # a picture, of a format no service decodes
    with SearchClient(search_address, collection="phone") as client:
        summary = client.ingest([folder])
    by_name = {Path(item.uri).name: (item.outcome, item.error) for item in summary.items}
    assert by_name == {
        "IMG_0001.avif": ("stored", ""),
        **dict.fromkeys(
            ["IMG_0002.HEIC", "IMG_0003.HEIC"],
            (
                "failed",
                "a HEIC photo (phones' format), which is not read: convert it to JPEG (formats read: JPEG, "
                "PNG, GIF, WebP, BMP, TIFF or AVIF)",
            ),
        ),
        "icon.ico": ("skipped", "not a picture (by its content)"),
    }


def test_uris_are_absolute_so_grids_work_from_any_folder(search_address, tmp_path) -> None:
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "p.png").write_bytes(picture(30))
    (tmp_path / "elsewhere").mkdir()
    address = ["--server", search_address, "--collection", "absolute"]
    assert run_cli(*address, "ingest", "here", "--no-progress", cwd=tmp_path).returncode == 0
    done = run_cli(*address, "search", "x", "--json", "--grid", "grid.png", cwd=tmp_path / "elsewhere")
    [hit] = json.loads(done.stdout)
    assert hit["uri"] == str(tmp_path / "here" / "p.png")
    assert_tiles(Image.open(tmp_path / "elsewhere" / "grid.png"), 1)


def test_paths_named_that_cannot_be_looked_at_fail_alone(search_address, tmp_path) -> None:
    """A loop of links, and a file in a folder the user may not enter, are there: each is a failed item
    with its reason, not "no such file", and the other paths are ingested."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "closed").mkdir()
    (tmp_path / "closed" / "inside.png").write_bytes(picture(40))
    (tmp_path / "closed").chmod(0)
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "a.png").write_bytes(picture(41))
    (tmp_path / "open" / "loop").symlink_to(tmp_path / "open" / "loop")
    named = [tmp_path / "loop", tmp_path / "closed" / "inside.png", tmp_path / "open"]
    code, report = ingest_json(search_address, *named, collection="unseen")
    assert code == EXIT_PARTIAL
    assert outcomes(report) == {
        str(tmp_path / "loop"): ("failed", "cannot read: a loop of links"),
        str(tmp_path / "closed" / "inside.png"): ("failed", "cannot read: Permission denied"),
        str(tmp_path / "open" / "a.png"): ("stored", ""),
        str(tmp_path / "open" / "loop"): ("failed", "cannot read: a loop of links"),
    }


ENTRY_KINDS = [
    "picture",
    "copy of a picture",
    "text",
    "empty",
    "unreadable picture",
    "too large",
    "named pipe",
    "link to a picture",
    "broken link",
    "link to a folder",
    "link to itself",
]
FAILURES = {
    "unreadable picture": "cannot open: Permission denied",
    "too large": "over the limit",
    "named pipe": "not a regular file (a named pipe)",
    "broken link": "a broken link",
    "link to a folder": "a link to a folder",
    "link to itself": "cannot read: a loop of links",
    "unreadable folder": "cannot list this folder",
}


def _name() -> st.SearchStrategy[str]:
    hostile_text = st.text(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"), min_size=1, max_size=16
    )
    raw_bytes = st.binary(min_size=1, max_size=12).map(
        lambda raw: raw.replace(b"/", b"_").replace(b"\0", b"_")
    )
    return st.one_of(hostile_text, raw_bytes.map(os.fsdecode)).filter(lambda name: name not in (".", ".."))


def _entries(kinds: list[str]) -> st.SearchStrategy[list[tuple[str, str]]]:
    return st.lists(st.tuples(_name(), st.sampled_from(kinds)), max_size=6, unique_by=lambda entry: entry[0])


TREES = st.tuples(
    _entries(ENTRY_KINDS),
    st.lists(st.tuples(_name(), st.booleans(), _entries(ENTRY_KINDS)), max_size=2, unique_by=lambda f: f[0]),
)


def _make(
    folder: Path, entries: list[tuple[str, str]], expected: dict[str, str], seeds: Iterator[int]
) -> None:
    """Writes the entries; `expected` gets each one's uri and outcome ("stored" for a picture or a second
    path to one: a content is stored once, and its other paths are "present")."""
    anchor = folder / ".anchor.png"  # what links and copies point at: a picture of its own
    anchor.write_bytes(picture(next(seeds)))
    expected[uri_of(anchor)] = "stored"
    for name, kind in entries:
        path = folder / name
        if kind == "picture":
            path.write_bytes(picture(next(seeds)))
        elif kind == "copy of a picture":
            path.write_bytes(anchor.read_bytes())
        elif kind in ("text", "empty"):
            path.write_bytes(b"just words" if kind == "text" else b"")
        elif kind == "unreadable picture":
            path.write_bytes(picture(next(seeds)))
            path.chmod(0)
        elif kind == "too large":
            path.write_bytes(too_large())
        elif kind == "named pipe":
            os.mkfifo(path)
        elif kind == "link to a picture":
            path.symlink_to(anchor)
        elif kind == "broken link":
            path.symlink_to(folder / "no such file")
        elif kind == "link to a folder":
            path.symlink_to(folder)
        elif kind == "link to itself":
            path.symlink_to(path)
        outcome = "failed" if kind in FAILURES else "skipped" if kind in ("text", "empty") else "stored"
        expected[uri_of(path)] = outcome


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=TREES)
def test_hostile_trees_store_each_picture_once_and_report_every_other_entry(search_address, tree) -> None:
    top, folders = tree
    seeds = iter(range(1000, 2000))
    expected: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "top").mkdir()
        _make(Path(root) / "top", top, expected, seeds)
        for name, readable, entries in folders:
            folder = Path(root) / "sub" / name
            folder.mkdir(parents=True)
            if readable:
                _make(folder, entries, expected, seeds)
            else:
                folder.chmod(stat.S_IWUSR)
                expected[uri_of(folder)] = "failed"
        collection = f"tree_{uuid.uuid4().hex}"
        code, report = ingest_json(search_address, Path(root), collection=collection)
    reported = outcomes(report)
    assert set(reported) == set(expected)
    for uri, outcome in expected.items():
        got, error = reported[uri]
        assert got == outcome or (outcome == "stored" and got == "present"), (uri, got, error)
    pictures = sum(outcome == "stored" for outcome in expected.values())
    distinct = {uri for uri, (got, _) in reported.items() if got == "stored"}
    done = {"stored", "present"} & set(expected.values())
    assert code == (0 if "failed" not in expected.values() else EXIT_PARTIAL if done else EXIT_FAILED)
    with SearchClient(search_address, collection=collection) as client:
        assert client.stats().count == len(distinct) <= pictures


def test_a_progress_callback_slower_than_the_timeout_is_not_the_service_going_silent(
    search_address, tmp_path
) -> None:
    """The answers waited unread while the callback ran, and the SDK blamed the service for the wait: it
    cancelled the stream (DEADLINE_EXCEEDED, "answered nothing for 1 s") and under-reported what was stored.
    The callback's sleep is the slow work under test, not a wait for something to happen."""
    folder = tmp_path / "pics"
    folder.mkdir()
    for index in range(24):
        (folder / f"{index:02d}.png").write_bytes(picture(8000 + index))

    def slow_at_first(item, summary) -> None:  # type: ignore[no-untyped-def]
        if summary.stored + summary.present == 1:
            time.sleep(2.5)

    async def slow_at_first_async(item, summary) -> None:  # type: ignore[no-untyped-def]
        if summary.stored + summary.present == 1:
            await asyncio.sleep(2.5)

    async def ingest_async() -> IngestSummary:
        async with AsyncSearchClient(search_address, collection="slow_async", timeout=1) as client:
            return await client.ingest([folder], progress=slow_at_first_async)

    for collection in ("slow", "slow_async"):  # made first: making one takes half a second on a busy machine
        with SearchClient(search_address, collection=collection) as client:
            assert client.ingest([folder / "00.png"]).stored == 1
    with SearchClient(search_address, collection="slow", timeout=1) as client:
        done = client.ingest([folder], progress=slow_at_first)
    done_async = asyncio.run(ingest_async())
    assert (done.stored, done.present) == (23, 1) and (done_async.stored, done_async.present) == (23, 1)


def test_an_ingest_cut_short_keeps_and_prints_what_was_done(small_limit_encoder, tmp_path) -> None:
    """The search service dies mid-stream: the results received until then are still printed, in --json
    too, and the message says which service was lost."""
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(2000):
        (folder / f"{index:04d}.png").write_bytes(picture(5000 + index))
    args = ["--encoder", small_limit_encoder, "--milvus-uri", str(tmp_path / "milvus.db")]
    with service_process("search_service", "search service listening", *args) as (process, address):
        result: dict = {}
        ingest = threading.Thread(
            target=lambda: result.update(done=run_cli("--server", address, "ingest", str(folder), "--json"))
        )
        ingest.start()
        with search_stub(address) as stub:
            while not _stored_some(stub):
                assert ingest.is_alive(), result
                threading.Event().wait(0.02)  # a bounded poll of a condition, not a guess at a duration
        process.send_signal(signal.SIGKILL)
        ingest.join()
    done = result["done"]
    report = json.loads(done.stdout)
    assert done.returncode == EXIT_FAILED and "Traceback" not in done.stderr
    gone = f"UNAVAILABLE: the search service at {address} went away during the stream"  # not "cannot reach"
    assert report["interrupted"].startswith(gone)
    assert 1 <= report["stored"] < 2000 == report["total"]
    # It had answered: its address and TLS are right, and what it stored is not sent twice.
    assert (
        "once the search service runs again, run the same ingest: what it stored is not stored twice"
        in done.stderr
    )
    assert "without TLS" not in done.stderr


def test_an_ingest_whose_service_dies_before_its_first_answer_ends_at_once(
    tiny_path, tmp_path, monkeypatch
) -> None:
    """The SDK's retry policy covered Ingest: a stream whose service died before it had answered anything
    never ended, whatever the timeout (grpcio 1.85), and `imgsearch ingest` hung until Ctrl-C."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    for index in range(8):
        (folder / f"{index}.png").write_bytes(picture(7000 + index))
    with encoder_process(tiny_path) as (encoder, encoder_address):
        args = ["--encoder", encoder_address, "--milvus-uri", str(tmp_path / "milvus.db")]
        with service_process("search_service", "search service listening", *args) as (search, address):
            asked_limits, sending = SearchClient.limits, Ingestion.requests

            def frozen_encoder_after_the_limits(client: SearchClient) -> Limits:
                limits = asked_limits(client)
                encoder.send_signal(signal.SIGSTOP)  # nothing can be encoded now, so nothing answered
                return limits

            def service_killed_once_the_stream_carries_a_picture(
                ingestion: Ingestion, limits: Limits
            ) -> Iterator[search_pb2.IngestRequest]:
                for number, request in enumerate(sending(ingestion, limits)):
                    if number == 1:  # the first one is sent: the stream is open
                        search.send_signal(signal.SIGKILL)
                    yield request

            monkeypatch.setattr(SearchClient, "limits", frozen_encoder_after_the_limits)
            monkeypatch.setattr(Ingestion, "requests", service_killed_once_the_stream_carries_a_picture)
            failures: list[IngestInterrupted] = []

            def ingest() -> None:
                with SearchClient(address, timeout=600) as client, pytest.raises(IngestInterrupted) as cut:
                    client.ingest([folder])
                failures.append(cut.value)

            streaming = threading.Thread(target=ingest, daemon=True)
            try:
                streaming.start()
                streaming.join(timeout=60)  # a bound on a hang: it ends within a second
            finally:
                encoder.send_signal(signal.SIGCONT)
    assert not streaming.is_alive() and len(failures) == 1
    assert failures[0].code == grpc.StatusCode.UNAVAILABLE
    assert failures[0].message.startswith(f"the search service at {address} went away during the stream")
    assert failures[0].went_away and not failures[0].reached


def _stored_some(stub) -> bool:  # type: ignore[no-untyped-def]
    """Whether Milvus holds 40 pictures: five batches of the encoder's 8, so that the first batch's results,
    which the service sends before it starts a fourth, have gone out."""
    try:
        return stub.Stats(search_pb2.StatsRequest(), timeout=5).count >= 40
    except grpc.RpcError as error:  # the collection is made with the first batch
        assert error.code() == grpc.StatusCode.NOT_FOUND
        return False


def test_the_encoder_lost_mid_ingest_is_named_and_the_results_so_far_are_kept(tiny_path, tmp_path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(40):
        (folder / f"{index:02d}.png").write_bytes(picture(7000 + index))
    encoder_context = running_encoder(tiny_path, max_items_per_request=4)
    encoder = encoder_context.__enter__()
    try:
        with (
            running_search(encoder.grpc.address, tmp_path / "milvus.db", encoder_timeout_s=3.0) as search,
            SearchClient(search.grpc.address) as client,
        ):

            def stop_the_encoder(item, summary) -> None:  # type: ignore[no-untyped-def]
                if summary.stored == 1:
                    encoder.stop()

            with pytest.raises(IngestInterrupted) as interrupted:
                client.ingest([folder], progress=stop_the_encoder)
    finally:
        encoder_context.__exit__(None, None, None)
    error = interrupted.value
    assert error.reached and error.code == grpc.StatusCode.UNAVAILABLE
    assert f"encoder at {encoder.grpc.address}" in error.message
    assert 1 <= error.summary.stored < 40 and error.summary.total == 40
    assert {item.outcome for item in error.summary.items} == {"stored"}


def test_with_the_encoder_down_the_cli_blames_the_encoder_not_the_search_service(tiny_path, tmp_path) -> None:
    (tmp_path / "a.png").write_bytes(picture(40))
    with running_encoder(tiny_path) as encoder:
        gone = encoder.grpc.address
    with running_search(gone, tmp_path / "milvus.db", encoder_timeout_s=2.0) as search:
        done = run_cli("--server", search.grpc.address, "ingest", str(tmp_path / "a.png"))
    assert done.returncode == EXIT_FAILED
    assert f"the search service at {search.grpc.address} says: UNAVAILABLE: encoder at {gone}" in done.stderr
    assert "cannot reach the search service" not in done.stderr


def test_pictures_given_where_one_is_expected_must_be_regular_files(tmp_path) -> None:
    """Never read a pipe or a device (it would block or never end), nor a folder; say so at once."""
    os.mkfifo(tmp_path / "pipe")
    for named, kind in ((tmp_path / "pipe", "a named pipe"), (Path("/dev/zero"), "a character device")):
        for command in (["search", "--image", str(named)], ["encode", "--image", str(named)]):
            done = run_cli("--server", "127.0.0.1:1", "--encoder", "127.0.0.1:1", *command, timeout=30)
            assert done.returncode == 2, done.stderr
            assert f"imgsearch: {named}: not a regular file ({kind})" in done.stderr
    with SearchClient("127.0.0.1:1") as client, pytest.raises(ImageSearchError) as folder:
        client.search_image(tmp_path)
    assert folder.value.message == f"{tmp_path}: not a regular file (a folder)"


def test_an_ingest_whose_encoder_is_down_still_reports_in_json(tmp_path, capsys) -> None:
    """The SDK asks the search service for its limits before the stream, and the service asks the encoder:
    that failure was a plain error, so `ingest --json` printed nothing, and neither client said what was
    left undone."""
    folder = tmp_path / "two"
    folder.mkdir()
    for index in range(2):
        (folder / f"{index}.png").write_bytes(picture(5100 + index))
    nobody = f"127.0.0.1:{free_port()}"
    with running_search(nobody, tmp_path / "milvus.db", encoder_timeout_s=5.0) as search:
        address = search.grpc.address
        code = main(["--server", address, "ingest", str(folder), "--json", "--no-progress"])
        out, err = capsys.readouterr()
        with pytest.raises(IngestInterrupted) as interrupted:
            asyncio.run(_ingest_async(address, folder))
    report = json.loads(out)
    assert code == EXIT_FAILED
    assert report["interrupted"].startswith(f"UNAVAILABLE: encoder at {nobody}")
    assert report["total"] == 2 and report["items"] == []
    assert f"encoder at {nobody}" in err
    assert interrupted.value.code == grpc.StatusCode.UNAVAILABLE
    assert interrupted.value.summary.total == 2 and interrupted.value.summary.items == []


async def _ingest_async(address: str, folder: Path) -> None:
    async with AsyncSearchClient(address) as client:
        await client.ingest(folder)

"""The SDK and the `imgsearch` command line against real services on loopback."""

import asyncio
import inspect
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import running_search, service_process, standing_in
from images import jpeg, png, solid, two_tone
from PIL import Image

from client import (
    AsyncEncoderClient,
    AsyncSearchClient,
    EncoderClient,
    ImageSearchError,
    IngestInterrupted,
    IngestItem,
    IngestSummary,
    SearchClient,
)
from client.cli import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, build_parser, main
from client.grid import COLUMNS, LABEL_HEIGHT, MARGIN, TILE
from client.ingest import Ingestion
from client.local import free_port
from client.models import Limits
from client.output import progress_bar
from imagesearch.v1 import search_pb2, search_pb2_grpc
from search_service.config import SearchConfig


@pytest.fixture(scope="module")
def services(tiny_encoder, tmp_path_factory):
    with running_search(tiny_encoder.grpc.address, tmp_path_factory.mktemp("milvus") / "milvus.db") as search:
        yield tiny_encoder.grpc.address, search.grpc.address


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Seven pictures in two folders, a text file, a text file named like a JPEG, and a truncated JPEG."""
    folder = tmp_path / "photos"
    (folder / "trips").mkdir(parents=True)
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]
    for index, color in enumerate(colors):
        (folder / f"{index}.png").write_bytes(png(two_tone(color, (240, 240, 240))))
    (folder / "trips" / "beach.jpg").write_bytes(jpeg(solid((250, 220, 150), (320, 240))))
    (folder / "notes.txt").write_text("not a picture")
    (folder / "fake.jpg").write_text("named like a picture, but text")
    whole = jpeg(two_tone((1, 2, 3), (200, 100, 50), (256, 256)))
    (folder / "trips" / "broken.jpg").write_bytes(whole[: len(whole) // 2])
    return folder


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sdk_ingest_reports_every_file(services, photo_folder) -> None:
    with SearchClient(services[1], collection="sdk_ingest") as client:
        summary = client.ingest([photo_folder], metadata={"album": "summer"})
        again = client.ingest([photo_folder])
        stats = client.stats()
    assert (summary.stored, summary.present, summary.failed) == (7, 0, 1)
    assert sorted(Path(p).name for p in summary.skipped) == ["fake.jpg", "notes.txt"]
    [failed] = [item for item in summary.items if item.outcome == "failed"]
    assert failed.uri.endswith("broken.jpg") and "cannot decode JPEG data" in failed.error
    assert (again.stored, again.present, again.failed) == (0, 7, 1)
    assert (stats.count, stats.collection, stats.dimension) == (7, "sdk_ingest", 512)


def test_sdk_search_get_delete_and_encode(services, photo_folder) -> None:
    encoder_address, search_address = services
    with SearchClient(search_address, collection="sdk_search") as client:
        client.ingest([photo_folder], metadata={"album": "summer"})
        beach = photo_folder / "trips" / "beach.jpg"
        [best, *_] = client.search_image(beach, top_k=3)
        assert best.uri == str(beach) and best.score == pytest.approx(1.0, abs=1e-4)
        assert best.metadata == {"album": "summer"}
        hits = client.search_text(
            "a sunny beach",
            top_k=4,
            filter="uri like {folder}",
            filter_params={"folder": f"{photo_folder}/trips/%"},
        )
        assert [hit.uri for hit in hits] == [str(beach)]
        [record] = client.get([best.id], output_fields=["vector", "model"])
        assert record.vector is not None and record.vector.shape == (512,)
        assert record.model.startswith("tiny.pt@sha256:") and record.ingested_at > 0
        assert client.delete(ids=[best.id]) == 1
        assert client.stats().count == 6
    with EncoderClient(encoder_address) as encoder:
        texts = encoder.encode_texts(["a dog", "a cat"])
        images = encoder.encode_images([beach, b"not an image"])
    assert texts.shape == (2, 512) and texts.dtype == np.float32
    assert float(images[0].vector @ record.vector) == pytest.approx(1.0, abs=1e-4)
    assert images[1].vector is None and "not a recognised image format" in images[1].error


def test_a_lone_picture_is_one_image_to_encode_not_a_list_of_letters(services, photo_folder) -> None:
    beach = photo_folder / "trips" / "beach.jpg"
    with EncoderClient(services[0]) as encoder:
        [by_path] = encoder.encode_images(str(beach))
        [by_bytes] = encoder.encode_images(beach.read_bytes())
        [listed] = encoder.encode_images([beach])

    async def scenario() -> list:
        async with AsyncEncoderClient(services[0]) as encoder:
            return await encoder.encode_images(beach)

    [awaited] = asyncio.run(scenario())
    for vector in (by_path.vector, by_bytes.vector, awaited.vector):
        assert vector is not None and float(vector @ listed.vector) == pytest.approx(1.0, abs=1e-5)


def test_async_client_against_the_same_servers(services, photo_folder) -> None:
    async def scenario() -> tuple:
        async with AsyncSearchClient(services[1], collection="sdk_async") as client:
            summary = await client.ingest([photo_folder])
            hits, stats = await asyncio.gather(client.search_text("a red picture", top_k=5), client.stats())
            return summary, hits, stats

    summary, hits, stats = asyncio.run(scenario())
    assert (summary.stored, summary.failed, stats.count) == (7, 1, 7)
    assert len(hits) == 5 and hits[0].score >= hits[-1].score


class Enough(Exception):
    """What a caller's progress callback raises to stop an ingest."""


def _stop_at_the_first_skipped(item: IngestItem, summary: IngestSummary) -> None:
    if item.outcome == "skipped":  # settled by the client: called while the requests are being made
        raise Enough(item.uri)


def test_what_a_progress_callback_raises_ends_the_ingest_as_itself(services, photo_folder) -> None:
    """gRPC would replace it with "Exception iterating requests!" (blocking) or a cancellation (asyncio)."""
    with SearchClient(services[1], collection="sdk_stop") as client, pytest.raises(Enough) as stopped:
        client.ingest(photo_folder, progress=_stop_at_the_first_skipped)
    assert stopped.value.args[0].endswith("fake.jpg")

    async def scenario() -> None:
        async with AsyncSearchClient(services[1], collection="sdk_stop") as client:
            await client.ingest(photo_folder, progress=_stop_at_the_first_skipped)

    with pytest.raises(Enough) as stopped:
        asyncio.run(scenario())
    assert stopped.value.args[0].endswith("fake.jpg")


def _stop_at_the_first_answer(item: IngestItem, summary: IngestSummary) -> None:
    if item.outcome in ("stored", "present"):  # answers of the service's
        raise Enough(item.uri)


def test_after_a_progress_callback_raised_for_an_answer_nothing_more_is_sent(photo_folder) -> None:
    """It used to escape the loop over the answers while the requests went on being sent: the whole folder
    was stored in the background after `ingest` had raised."""
    ingestion = Ingestion(photo_folder, True, "c", None, _stop_at_the_first_answer)
    requests = ingestion.requests(Limits(4 << 20, 4 << 20, 1000, 10000))
    first = next(requests)
    ingestion.record(search_pb2.IngestResponse(uri=first.uri, outcome=search_pb2.OUTCOME_STORED))
    assert list(requests) == []
    with pytest.raises(Enough):
        ingestion.raise_failure()


def test_a_progress_that_is_no_function_is_refused_before_anything_is_sent(services, photo_folder) -> None:
    """The first version's `progress` was True or False: False was called once the pictures were stored,
    and the ingest raised a TypeError instead of its summary."""
    with SearchClient(services[1], collection="sdk_progress_flag") as client:
        with pytest.raises(ImageSearchError) as refused:
            client.ingest(photo_folder, progress=False)  # type: ignore[arg-type]
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.message == "progress = False is not a function of (item, summary), nor None"
        with pytest.raises(ImageSearchError) as missing:
            client.stats()
        assert missing.value.code == grpc.StatusCode.NOT_FOUND  # nothing was sent: no collection made


def test_the_progress_callback_is_called_by_one_thread_at_a_time(tmp_path: Path) -> None:
    """The blocking client settles an unreadable file on gRPC's sending thread while the caller's thread
    records an answer: each call here waits (up to 2 s) for the other to begin, so calls made at once meet,
    and the CLI's bar was made twice."""
    (tmp_path / "0.png").write_bytes(png(solid((200, 30, 30), (16, 16))))
    (tmp_path / "notes.txt").write_text("not a picture")
    begun = {"skipped": threading.Event(), "stored": threading.Event()}
    inside, most_inside, counting = [0], [0], threading.Lock()

    def progress(item: IngestItem, summary: IngestSummary) -> None:
        with counting:
            inside[0] += 1
            most_inside[0] = max(most_inside[0], inside[0])
        begun[item.outcome].set()
        begun["stored" if item.outcome == "skipped" else "skipped"].wait(2)
        with counting:
            inside[0] -= 1

    ingestion = Ingestion(tmp_path, True, "c", None, progress)
    requests = ingestion.requests(Limits(4 << 20, 4 << 20, 1000, 10000))
    first = next(requests)
    sending = threading.Thread(target=list, args=(requests,))
    sending.start()
    ingestion.record(search_pb2.IngestResponse(uri=first.uri, outcome=search_pb2.OUTCOME_STORED))
    sending.join()
    assert most_inside[0] == 1
    assert (ingestion.summary.stored, len(ingestion.summary.skipped)) == (1, 1)


def test_the_async_client_awaits_an_async_progress_callback_and_what_it_raises_ends_the_ingest(
    services, photo_folder
) -> None:
    told: list[str] = []

    async def note(item: IngestItem, summary: IngestSummary) -> None:
        await asyncio.sleep(0)
        told.append(item.outcome)

    async def stop(item: IngestItem, summary: IngestSummary) -> None:
        _stop_at_the_first_answer(item, summary)

    async def scenario() -> IngestSummary:
        async with AsyncSearchClient(services[1], collection="sdk_async_progress") as client:
            summary = await client.ingest(photo_folder, progress=note)
            with pytest.raises(Enough):
                await client.ingest(photo_folder, progress=stop, metadata={"again": True})
            return summary

    summary = asyncio.run(scenario())
    assert sorted(told) == sorted(item.outcome for item in summary.items) and len(told) == summary.total


def test_an_ingest_whose_service_stops_answering_ends_after_the_timeout_with_what_it_got(
    tiny_encoder, photo_folder, tmp_path
) -> None:
    """Nothing else would end it: the stream has no deadline, as it may rightly take hours."""
    (photo_folder / "0-first.txt").write_text("settled by the client, before any picture is sent")
    search = service_process(
        "search_service",
        "search service listening",
        "--encoder",
        tiny_encoder.grpc.address,
        "--milvus-uri",
        str(tmp_path / "milvus.db"),
    )
    with search as (process, address):

        def stop_the_service(item: IngestItem, summary: IngestSummary) -> None:
            if item.uri.endswith("0-first.txt"):  # the stream is open, and no picture has been sent yet
                process.send_signal(signal.SIGSTOP)

        async def scenario() -> None:
            async with AsyncSearchClient(address, timeout=1.0) as client:
                await client.ingest(photo_folder, progress=stop_the_service)

        def answering() -> None:
            """The service answers (its encoder's too) without the 1 s limit, that an ingest's first call,
            for the limits, must then keep: a just started or resumed process may take longer."""
            with SearchClient(address) as client:
                client.limits()

        try:
            answering()
            with SearchClient(address, timeout=1.0) as client, pytest.raises(IngestInterrupted) as silent:
                client.ingest(photo_folder, progress=stop_the_service)
            process.send_signal(signal.SIGCONT)
            answering()
            with pytest.raises(IngestInterrupted) as silent_to_async:
                asyncio.run(scenario())
        finally:
            process.send_signal(signal.SIGCONT)
    for interrupted in (silent.value, silent_to_async.value):
        assert interrupted.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert interrupted.message == (
            f"the search service at {address} answered nothing for 1.0 s while it owed answers"
        )
        assert str(photo_folder / "0-first.txt") in interrupted.summary.skipped
        assert interrupted.summary.stored + interrupted.summary.present == 0  # none was answered


def test_one_path_id_or_text_is_taken_as_one_not_as_its_letters(services, photo_folder) -> None:
    encoder_address, search_address = services
    with SearchClient(search_address, collection="sdk_one") as client:
        summary = client.ingest(str(photo_folder / "0.png"))
        assert (summary.total, summary.stored) == (1, 1)
        [stored] = summary.items
        assert [record.id for record in client.get(stored.id)] == [stored.id]
        assert client.delete(ids=stored.id) == 1
    with EncoderClient(encoder_address) as encoder:
        assert encoder.encode_texts("a dog").shape == (1, 512)


def test_sdk_raises_its_own_error_with_the_status(services) -> None:
    with (
        SearchClient(services[1], collection="no_such_collection") as client,
        pytest.raises(ImageSearchError) as error,
    ):
        client.stats()
    assert error.value.code.name == "NOT_FOUND"
    assert "'no_such_collection' does not exist" in error.value.message


def test_a_closed_client_raises_the_sdks_own_error(services, photo_folder) -> None:
    """grpc's closed channel raised ValueError (blocking) or its own UsageError (asyncio)."""
    encoder_address, search_address = services

    def closed(error: pytest.ExceptionInfo[ImageSearchError], service: str, address: str) -> bool:
        message = f"this client of the {service} at {address} is closed: make a new one"
        return error.value.code == grpc.StatusCode.FAILED_PRECONDITION and error.value.message == message

    client = SearchClient(search_address)
    client.close()
    for call in (client.stats, lambda: client.ingest(photo_folder)):
        with pytest.raises(ImageSearchError) as error:
            call()
        assert closed(error, "search service", search_address)
    encoder = EncoderClient(encoder_address)
    encoder.close()
    with pytest.raises(ImageSearchError) as error:
        encoder.encode_texts("a dog")
    assert closed(error, "encoder service", encoder_address)

    async def asynchronously() -> None:
        client = AsyncSearchClient(search_address)
        await client.close()
        with pytest.raises(ImageSearchError) as error:
            await client.search_text("a dog")
        assert closed(error, "search service", search_address)
        encoder = AsyncEncoderClient(encoder_address)
        await encoder.close()
        with pytest.raises(ImageSearchError) as error:
            await encoder.encode_texts("a dog")
        assert closed(error, "encoder service", encoder_address)

    asyncio.run(asynchronously())


def test_cli_ingest_search_and_grid(services, photo_folder, tmp_path, capsys) -> None:
    server = ["--server", services[1], "--collection", "cli"]
    code, out, _ = cli(capsys, *server, "ingest", str(photo_folder), "--tag", "album=summer", "--no-progress")
    assert code == EXIT_PARTIAL
    assert "stored 7, already present 0, failed 1, skipped 2 (not images)" in out
    assert "FAILED" in out and "broken.jpg" in out
    # Again: nothing stored, but the pictures are there and the broken one failed again: some items failed.
    code, out, _ = cli(capsys, *server, "ingest", str(photo_folder), "--no-progress")
    assert (code, "stored 0, already present 7, failed 1" in out) == (EXIT_PARTIAL, True)

    code, out, _ = cli(capsys, *server, "search", "a red picture", "--top-k", "3")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "score", "path"] and len(lines) == 4

    code, out, _ = cli(
        capsys, *server, "search", "--image", str(photo_folder / "0.png"), "--json", "--top-k", "2"
    )
    hits = json.loads(out)
    assert code == EXIT_OK and hits[0]["uri"] == str(photo_folder / "0.png")
    assert hits[0]["metadata"] == {"album": "summer"}

    grid = tmp_path / "grid.png"
    code, _, err = cli(capsys, *server, "search", "a picture", "--top-k", "7", "--grid", str(grid))
    assert code == EXIT_OK and str(grid) in err
    assert_tiles(Image.open(grid), 7)

    code, out, _ = cli(capsys, *server, "stats")
    assert code == EXIT_OK and "collection cli: 7 pictures" in out

    first, second, third = (
        hit["id"] for hit in json.loads(cli(capsys, *server, "search", "x", "--json")[1])[:3]
    )
    code, out, _ = cli(
        capsys, *server, "delete", "--id", first, second, "--id", third
    )  # as the README writes
    assert code == EXIT_OK and "deleted 3" in out
    code, out, err = cli(capsys, *server, "delete", "--id", first)
    assert code == EXIT_FAILED and "deleted 0" in out and f"not stored: {first}" in err
    remaining = json.loads(cli(capsys, *server, "search", "x", "--json")[1])[0]["id"]
    code, out, err = cli(capsys, *server, "delete", "--id", remaining, second)
    assert code == EXIT_PARTIAL and "deleted 1" in out
    assert f"not stored: {second}" in err and remaining not in err


def test_the_ingest_progress_bar_is_redrawn_a_few_times_a_second_not_for_every_picture(
    capsys, monkeypatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # capsys's stderr: drawn as on a terminal
    pictures = 2000
    summary = IngestSummary(total=pictures)
    with progress_bar(True) as advance:
        assert advance is not None
        for number in range(pictures):
            item = IngestItem(f"{number}.jpg", f"{number:064x}", "present")
            summary.add(item)
            advance(item, summary)
    frames = [frame for frame in capsys.readouterr().err.split("\r") if frame.strip()]
    # tqdm redraws at most every tenth of a second, and these calls take a small fraction of one.
    assert len(frames) < pictures / 20
    assert "2000/2000" in frames[-1] and "present=2000" in frames[-1]


def test_the_progress_bar_is_drawn_from_the_first_item_on_a_terminal_only(
    services, tmp_path, capsys, monkeypatch
) -> None:
    """An empty bar was drawn before a refusal of the arguments, and each redraw was a line in a log."""
    with monkeypatch.context() as terminal:
        terminal.setattr(sys.stderr, "isatty", lambda: True)
        with progress_bar(True):
            pass
    assert capsys.readouterr().err == ""
    (tmp_path / "a.png").write_bytes(png(solid((90, 180, 40))))
    code, _, err = cli(capsys, "--server", services[1], "--collection", "unbarred", "ingest", str(tmp_path))
    assert code == EXIT_OK and "img" not in err  # capsys is no terminal


def assert_tiles(sheet: Image.Image, count: int) -> None:
    """The sheet has rows of COLUMNS tiles, and exactly `count` of its slots hold a picture."""
    rows = -(-count // COLUMNS)
    header = sheet.height - rows * (TILE[1] + LABEL_HEIGHT + MARGIN) - MARGIN
    assert sheet.width == COLUMNS * (TILE[0] + MARGIN) + MARGIN and header >= 0
    pixels = np.asarray(sheet.convert("L"))
    filled = 0
    for slot in range(rows * COLUMNS):
        x = MARGIN + (slot % COLUMNS) * (TILE[0] + MARGIN)
        y = header + MARGIN + (slot // COLUMNS) * (TILE[1] + LABEL_HEIGHT + MARGIN)
        filled += bool((pixels[y : y + TILE[1], x : x + TILE[0]] < 250).any())
    assert filled == count


def test_a_grid_shows_a_picture_whose_file_name_is_not_utf8(services, tmp_path, capsys) -> None:
    """Its URI holds `\\xe9` for the byte that is not UTF-8; the grid still finds the file, and not another
    file whose name is that URI as written (it drew that one instead)."""
    (tmp_path / "pictures").mkdir()
    name = tmp_path / "pictures" / os.fsdecode(b"caf\xe9.png")
    name.write_bytes(png(solid((220, 20, 20), (200, 150))))
    server = ["--server", services[1], "--collection", "odd_names"]
    assert cli(capsys, *server, "ingest", str(tmp_path / "pictures"), "--no-progress")[0] == EXIT_OK
    (tmp_path / "pictures" / "caf\\xe9.png").write_bytes(png(solid((20, 20, 220), (200, 150))))
    grid = tmp_path / "grid.png"
    assert cli(capsys, *server, "search", "x", "--top-k", "1", "--grid", str(grid))[0] == EXIT_OK
    sheet = Image.open(grid).convert("RGB")
    header = sheet.height - (TILE[1] + LABEL_HEIGHT + MARGIN) - MARGIN
    middle = (MARGIN + TILE[0] // 2, header + MARGIN + TILE[1] // 2)
    assert sheet.getpixel(middle) == pytest.approx((220, 20, 20), abs=3)  # not the grey of a missing file


def test_an_asyncio_client_is_made_and_used_in_one_event_loop(services) -> None:
    """grpc.aio's own RuntimeErrors came out: "no current event loop", "attached to a different loop". A
    client made before its loop runs, in the loop set for the thread, works (`run_until_complete`)."""
    asyncio.set_event_loop(None)  # as an asyncio.run leaves it
    with pytest.raises(ImageSearchError) as outside:
        AsyncSearchClient(services[1])
    assert outside.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert outside.value.message.startswith("an asyncio client of the search service is made where an event")

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        client = AsyncSearchClient(services[1])
        assert loop.run_until_complete(client.limits()).max_top_k > 0

        async def used_elsewhere() -> None:
            await client.stats()

        with pytest.raises(ImageSearchError) as elsewhere:
            asyncio.run(used_elsewhere())
        loop.run_until_complete(client.close())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert elsewhere.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "belongs to the event loop it was made in: make one in this loop" in elsewhere.value.message


def test_cli_without_a_server_says_what_to_do(capsys) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{probe.getsockname()[1]}"
    code, out, err = cli(capsys, "--server", nobody, "--timeout", "5", "stats")
    assert code == EXIT_FAILED and out == ""
    assert f"cannot reach the search service at {nobody}" in err
    assert "imgsearch up" in err and "Traceback" not in err


def test_cli_usage_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["search"])
    assert usage.value.code == 2
    assert "search takes a TEXT or --image PATH" in capsys.readouterr().err


def test_demo_runs_end_to_end(tmp_path, capsys) -> None:
    code, out, _ = cli(
        capsys, "demo", "--workdir", str(tmp_path / "demo"), "--per-class", "1", "--no-progress"
    )
    assert code == EXIT_OK
    assert "ingested: stored 48, already present 0, failed 0" in out
    grids = sorted(path.name for path in (tmp_path / "demo" / "grids").iterdir())
    assert len(grids) == 6 and "image-query.png" in grids
    assert "services stopped" in out


def test_a_client_at_another_services_address_is_told_so(tiny_encoder, capsys) -> None:
    """The encoder's address given as the search service's was answered "is the search service running
    there? Start one with `imgsearch up`", though a server had answered."""
    address = tiny_encoder.grpc.address
    assert main(["--server", address, "stats"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert f"the server at {address} does not serve this call" in err and "is it the search service" in err
    assert "Start one with" not in err
    with SearchClient(address) as client, pytest.raises(ImageSearchError) as error:
        client.stats()
    assert error.value.code == grpc.StatusCode.UNIMPLEMENTED and not error.value.reached


IN_FRONT_OF_A_SEARCH_SERVICE = search_pb2_grpc.add_SearchServiceServicer_to_server


class FirstVersion(search_pb2_grpc.SearchServiceServicer):
    """The search service as its first version answers, in front of a real one: without GetLimits (the
    generated base answers UNIMPLEMENTED), and blind to the request fields added since, which are cleared
    before the request goes on (proto3 drops the fields it does not know)."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = search_pb2_grpc.SearchServiceStub(self.channel)

    def Stats(self, request, context):  # type: ignore[no-untyped-def]
        return self.stub.Stats(request)

    def SearchText(self, request, context):  # type: ignore[no-untyped-def]
        request.options.ClearField("min_score")
        return self.stub.SearchText(request)

    def Delete(self, request, context):  # type: ignore[no-untyped-def]
        request.ClearField("dry_run")
        return self.stub.Delete(request)


class Restarting(search_pb2_grpc.SearchServiceServicer):
    """In front of a real search service: answers its first `refusals` Stats calls UNAVAILABLE, as a service
    whose Milvus is restarting does, and passes the others on; counts them all."""

    def __init__(self, target: str, refusals: int) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = search_pb2_grpc.SearchServiceStub(self.channel)
        self.refusals, self.calls = refusals, 0

    def Stats(self, request, context):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls <= self.refusals:
            context.abort(grpc.StatusCode.UNAVAILABLE, "Milvus is restarting")
        return self.stub.Stats(request)


def test_the_sdk_retries_a_call_its_service_could_not_answer_now(services, photo_folder) -> None:
    """UNAVAILABLE is what can succeed on a retry (gRPC retries it for the SDK, with backoff)."""
    with SearchClient(services[1], collection="sdk_retried") as client:
        client.ingest([photo_folder])
    for stats in (_stats, lambda address: asyncio.run(_stats_async(address))):
        with standing_in(Restarting(services[1], refusals=2), IN_FRONT_OF_A_SEARCH_SERVICE) as (
            address,
            restarting,
        ):
            assert stats(address).count == 7
        assert restarting.calls == 3


def _stats(address: str) -> Any:
    with SearchClient(address, collection="sdk_retried") as client:
        return client.stats()


async def _stats_async(address: str) -> Any:
    async with AsyncSearchClient(address, collection="sdk_retried") as client:
        return await client.stats()


def test_no_dry_run_or_min_score_goes_to_a_first_version_service_which_would_ignore_it(
    services, photo_folder
) -> None:
    """Found upgrading: a dry run (the CLI's question before a delete by filter) deleted what it was to
    count, and min_score came back with hits under it."""
    with SearchClient(services[1], collection="sdk_first_version") as client:
        client.ingest([photo_folder])
    with standing_in(FirstVersion(services[1]), IN_FRONT_OF_A_SEARCH_SERVICE) as (address, _):

        async def dry_run() -> int:
            async with AsyncSearchClient(address, collection="sdk_first_version") as client:
                return await client.delete(filter='uri like "/%"', dry_run=True)

        with SearchClient(address, collection="sdk_first_version") as client:
            refusals = []
            for asked in (
                lambda: client.delete(filter='uri like "/%"', dry_run=True),
                lambda: client.search_text("a red picture", min_score=0.99),
                lambda: asyncio.run(dry_run()),
            ):
                with pytest.raises(ImageSearchError) as refused:
                    asked()
                refusals.append((refused.value.code, refused.value.message))
            assert client.stats().count == 7  # nothing deleted
            assert len(client.search_text("a red picture", top_k=3)) == 3  # what it reads still works
    older = f"the server at {address} does not serve GetLimits: if it is the first version's search service, "
    older += "it would ignore "
    upgrade = ": upgrade it (or use the client of its version)"
    dry_run_refused = older + "dry_run (it would delete what it was asked to count)" + upgrade
    min_score_refused = older + "min_score (it would answer hits under it)" + upgrade
    assert refusals == [
        (grpc.StatusCode.FAILED_PRECONDITION, dry_run_refused),
        (grpc.StatusCode.FAILED_PRECONDITION, min_score_refused),
        (grpc.StatusCode.FAILED_PRECONDITION, dry_run_refused),
    ]


def test_a_dry_run_needs_no_encoder_though_the_sdk_asks_the_services_limits_first(
    tiny_encoder, photo_folder, tmp_path
) -> None:
    """GetLimits asks the encoder: with it down, the question before a dry run failed (UNAVAILABLE, after
    the encoder's retries), though counting what a delete would remove never needs the encoder."""
    with (
        running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db") as search,
        SearchClient(search.grpc.address) as client,
    ):
        assert client.ingest([photo_folder]).stored == 7
    with (
        running_search(f"127.0.0.1:{free_port()}", tmp_path / "milvus.db", encoder_timeout_s=2.0) as search,
        SearchClient(search.grpc.address) as client,
    ):
        assert client.delete(filter='uri like "/%"', dry_run=True) == 7
        assert client.stats().count == 7


def test_the_clients_default_deadline_outlasts_the_search_services_own_on_the_encoder() -> None:
    """Both were 60 s: a hung encoder showed as the caller's own DEADLINE_EXCEEDED, at the moment the search
    service's error naming the encoder was due."""
    encoder_deadline = SearchConfig().encoder_timeout_s
    for client in (SearchClient, AsyncSearchClient, EncoderClient, AsyncEncoderClient):
        assert inspect.signature(client).parameters["timeout"].default > encoder_deadline, client
    assert build_parser().parse_args(["stats"]).timeout > encoder_deadline

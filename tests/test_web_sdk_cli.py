"""The new search features through the SDK and the `imgsearch` command line, and `make web`'s runner."""

import asyncio
import hashlib
import io
import json
import threading
import urllib.request
from pathlib import Path

import grpc
import pytest
from conftest import running_search
from images import png, two_tone
from PIL import Image

from client import AsyncSearchClient, ImageSearchError, QueryPart, SearchClient
from client.cli import EXIT_FAILED, EXIT_OK, main
from client.local import free_port
from demo.run import serve_page, synthetic_plan


@pytest.fixture(scope="module")
def server(tiny_encoder, tmp_path_factory) -> str:
    with running_search(tiny_encoder.grpc.address, tmp_path_factory.mktemp("milvus") / "milvus.db") as search:
        yield search.grpc.address


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]
    for index, color in enumerate(colors):
        (folder / f"{index}.png").write_bytes(png(two_tone(color, (240, 240, 240))))
    return folder


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_query_part_holds_exactly_one_thing() -> None:
    assert QueryPart(text="a dog", weight=-0.5).weight == -0.5
    for wrong in ({}, {"text": "a", "id": "b"}, {"image": b"x", "text": "y"}):
        with pytest.raises(ImageSearchError, match="exactly one of text, image or id"):
            QueryPart(**wrong)


def test_sdk_more_like_this_mixed_parts_min_score_and_thumbnails(server, photos) -> None:
    with SearchClient(server, collection="sdk_features") as client:
        client.ingest([photos])
        red = photos / "0.png"
        similar = client.search_similar(sha(red), top_k=6)
        assert similar[0].uri == str(red) and similar[0].score == pytest.approx(1.0, abs=1e-4)
        assert [hit.id for hit in client.search_image(red, top_k=6)] == [hit.id for hit in similar]

        cut = similar[2].score
        assert [h.id for h in client.search_similar(sha(red), top_k=6, min_score=cut)] == [
            h.id for h in similar if h.score >= cut
        ]
        assert len(client.search_text("a picture", top_k=6, min_score=-1.0)) == 6
        assert len(client.search_image(red, top_k=6, min_score=0.9999)) == 1

        mixed = client.search(
            [QueryPart(image=red), QueryPart(id=sha(photos / "1.png"), weight=-1.0)], top_k=6
        )
        assert mixed[0].uri == str(red) and mixed[-1].uri == str(photos / "1.png")

        thumbnail = client.thumbnail(sha(red))
        assert Image.open(io.BytesIO(thumbnail)).format == "JPEG"
        for call, code in (
            (lambda: client.thumbnail("0" * 64), grpc.StatusCode.NOT_FOUND),
            (lambda: client.search_similar("0" * 64), grpc.StatusCode.NOT_FOUND),
            (
                lambda: client.search([QueryPart(text="a", weight=float("nan"))]),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        ):
            with pytest.raises(ImageSearchError) as error:
                call()
            assert error.value.code == code


def test_async_client_has_the_same_new_calls(server, photos) -> None:
    async def scenario() -> tuple:
        async with AsyncSearchClient(server, collection="sdk_async_features") as client:
            await client.ingest([photos])
            return await asyncio.gather(
                client.search_similar(sha(photos / "2.png"), top_k=2),
                client.search([QueryPart(text="a blue picture", weight=2)], top_k=2),
                client.thumbnail(sha(photos / "2.png")),
            )

    similar, mixed, thumbnail = asyncio.run(scenario())
    assert similar[0].uri == str(photos / "2.png") and len(mixed) == 2 and thumbnail[:2] == b"\xff\xd8"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_like_weighted_parts_and_min_score(server, photos, tmp_path, capsys) -> None:
    base = ["--server", server, "--collection", "cli_features"]
    assert cli(capsys, *base, "ingest", str(photos), "--no-progress")[0] == EXIT_OK
    red, green = photos / "0.png", photos / "1.png"

    code, out, _ = cli(capsys, *base, "search", "--like", sha(red), "--json", "--top-k", "6")
    hits = json.loads(out)
    assert code == EXIT_OK and hits[0]["uri"] == str(red)

    cut = hits[2]["score"]
    code, out, _ = cli(capsys, *base, "search", "--like", sha(red), "--min-score", str(cut), "--json")
    assert [hit["id"] for hit in json.loads(out)] == [hit["id"] for hit in hits if hit["score"] >= cut]

    grid = tmp_path / "grid.png"
    code, out, err = cli(
        capsys,
        *base,
        "search",
        "--image",
        str(red),
        "--like",
        sha(green),
        "-1",
        "--json",
        "--grid",
        str(grid),
    )
    mixed = json.loads(out)
    assert code == EXIT_OK and mixed[0]["uri"] == str(red) and mixed[-1]["uri"] == str(green)
    assert grid.is_file() and str(grid) in err

    code, _, err = cli(capsys, *base, "search", "a picture", "--text", "a picture", "-1")
    assert code == EXIT_FAILED and "the parts cancel out" in err


def test_cli_refuses_bad_parts_as_usage_errors(capsys) -> None:
    for args, complaint in (
        (["search", "--text", "a", "two"], "--text a: WEIGHT 'two' is not a finite number"),
        (["search", "--like", "x", "1", "2"], "--like takes ID and an optional WEIGHT"),
        (["search", "--image", "rex.jpg", "nan"], "WEIGHT 'nan' is not a finite number"),
    ):
        with pytest.raises(SystemExit) as usage:
            main(args)
        assert usage.value.code == 2 and complaint in capsys.readouterr().err


def test_make_web_serves_the_demo_collection_until_stopped(tmp_path, capsys) -> None:
    workdir, port, stop = tmp_path / "demo", free_port(), threading.Event()
    plan = synthetic_plan(workdir, "", per_class=1)
    runner = threading.Thread(target=serve_page, args=(workdir, plan, port, lambda: stop, False))
    runner.start()
    try:
        for _ in range(600):  # a bounded poll: the services take a few seconds to start
            if "search page:" in (printed := capsys.readouterr().out) or not runner.is_alive():
                break
            stop.wait(0.5)
        assert f"search page: http://127.0.0.1:{port}/" in printed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/search?q=a+red+circle&top_k=1") as answer:
            [hit] = json.load(answer)["hits"]
        assert hit["name"].startswith("red-circle-")
    finally:
        stop.set()
        runner.join()
    assert "services stopped" in capsys.readouterr().out

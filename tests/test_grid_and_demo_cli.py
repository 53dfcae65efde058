"""`--grid` with pictures that are not (or no longer) on this machine, and `imgsearch demo`'s flags."""

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from images import mistyped_exif_jpeg, png, png_with_size_header, solid, two_tone
from PIL import Image

import demo.command
from client import Hit
from client.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from client.grid import MARGIN, MISSING, TILE, write_grid
from demo.run import DemoPlan
from imagesearch.defaults import WEB_PORT


def test_a_grid_greys_out_the_pictures_it_cannot_read_here_and_says_how_many(tmp_path, capsys) -> None:
    """A file that moved, a named pipe (opening it blocked the grid for good) and a file that has become a
    huge picture (Pillow's DecompressionBombError was a traceback) each get a grey tile."""
    present = tmp_path / "present.png"
    present.write_bytes(png(solid((220, 20, 20), (200, 150))))
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_with_size_header(30_000, 30_000))
    uris = [present, tmp_path / "moved.png", pipe, huge]
    hits = [Hit(id=f"{n:064x}", uri=str(uri), metadata={}, score=0.5) for n, uri in enumerate(uris)]
    with ThreadPoolExecutor(1) as pool:
        grid = pool.submit(write_grid, hits, tmp_path / "grid.png")
        try:
            grid.result(timeout=60)  # a TimeoutError: blocked on the pipe
        finally:
            if grid.running():  # a writer lets the blocked reader go, so that the test ends
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
    assert capsys.readouterr().err == (
        "3 of 4 pictures cannot be read on this machine (moved, deleted or no longer a picture): "
        "their tiles are grey\n"
    )
    sheet = Image.open(tmp_path / "grid.png").convert("RGB")
    middles = [
        (MARGIN + slot * (TILE[0] + MARGIN) + TILE[0] // 2, MARGIN + TILE[1] // 2) for slot in range(4)
    ]
    assert sheet.getpixel(middles[0]) == pytest.approx((220, 20, 20), abs=3)
    assert [sheet.getpixel(middle) for middle in middles[1:]] == [MISSING] * 3


def test_a_file_name_under_a_tile_stays_on_its_one_line(tmp_path) -> None:
    """A newline in a file name drew a second line under the first, cut off by the sheet's edge."""
    named = tmp_path / "a\nsecond line.png"
    named.write_bytes(png(solid((20, 20, 220))))
    write_grid([Hit(id="0" * 64, uri=str(named), metadata={}, score=0.5)], tmp_path / "grid.png")
    sheet = np.asarray(Image.open(tmp_path / "grid.png").convert("L"))
    below_the_label = sheet[MARGIN + TILE[1] + 36 :, :]  # the name's one line ends 33 pixels under the tile
    assert below_the_label.min() == 255
    assert sheet[MARGIN + TILE[1] + 20 : MARGIN + TILE[1] + 34, :].min() < 128  # the name is there


def test_a_grid_of_pictures_all_here_says_nothing_more(tmp_path, capsys) -> None:
    present = tmp_path / "present.png"
    present.write_bytes(png(solid((20, 20, 220))))
    write_grid([Hit(id="0" * 64, uri=str(present), metadata={}, score=0.5)], tmp_path / "grid.png")
    assert capsys.readouterr().err == ""


def test_a_grid_shows_each_picture_as_the_services_decode_it(tmp_path, capsys) -> None:
    """Pillow's exif_transpose refused a JPEG with one mistyped EXIF tag (a grey tile, where its thumbnail
    showed it); a 16-bit grey came out white, and transparency black."""
    mistyped = tmp_path / "mistyped.jpg"
    mistyped.write_bytes(mistyped_exif_jpeg(two_tone((200, 40, 40), (40, 40, 200), (220, 165))))
    grey = tmp_path / "grey16.png"
    Image.fromarray(np.full((165, 220), 100 * 256, dtype=np.uint16)).save(grey)
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (220, 165), (0, 0, 0, 0)).save(clear)
    hits = [
        Hit(id=f"{n:064x}", uri=str(uri), metadata={}, score=0.5)
        for n, uri in enumerate([mistyped, grey, clear])
    ]
    write_grid(hits, tmp_path / "grid.png")
    assert capsys.readouterr().err == ""
    sheet = Image.open(tmp_path / "grid.png").convert("RGB")
    left, right = (
        (MARGIN + TILE[0] // 6, MARGIN + TILE[1] // 2),
        (MARGIN + TILE[0] * 5 // 6, MARGIN + TILE[1] // 2),
    )
    assert sheet.getpixel(left) == pytest.approx((200, 40, 40), abs=12)  # upright: red on the left
    assert sheet.getpixel(right) == pytest.approx((40, 40, 200), abs=12)
    middles = [(MARGIN + slot * (TILE[0] + MARGIN) + TILE[0] // 2, MARGIN + TILE[1] // 2) for slot in (1, 2)]
    assert [sheet.getpixel(middle) for middle in middles] == [(100, 100, 100), (255, 255, 255)]


HERE = str(Path(__file__).parent)
HERE_QUERIED_BY = ["--pictures", HERE, "--query", "x", "--image-query"]


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["--per-class", "0"], "argument --per-class: '0' is not a whole number above 0"),
        (["--per-class", "-3"], "argument --per-class: '-3' is not a whole number above 0"),
        (["--top-k", "0"], "argument --top-k: '0' is not a whole number above 0"),
        (["--top-k", "ten"], "argument --top-k: 'ten' is not a whole number above 0"),
        (["--query", "a dog"], "demo --query goes with --pictures, and not with --web"),
        (["--image-query", "rex.jpg"], "demo --image-query goes with --pictures, and not with --web"),
        (["--pictures", "p", "--web", "--query", "a dog"], "demo --query goes with --pictures, and not with"),
        (["--pictures", "p", "--per-class", "3"], "demo --per-class is for the synthetic pictures"),
        (["--web", "--top-k", "5"], "demo --top-k is for the printed hits, not --web"),
        (["--web-port", "8081"], "demo --web-port goes with --web"),
        (
            ["--pictures", "p", "--query", "a dog"],
            "demo --pictures also needs --query TEXT and --image-query",
        ),
        (["--pictures", "p", "--web"], "demo --pictures p: no such folder"),
        (["--pictures", __file__, "--web"], f"demo --pictures {__file__} is not a folder"),
        ([*HERE_QUERIED_BY, "q.jpg"], "demo --image-query q.jpg: no such file"),
        ([*HERE_QUERIED_BY, HERE], f"demo --image-query {HERE} is not a file"),
    ],
)
def test_the_demo_refuses_what_it_would_ignore_or_cannot_do_before_anything_starts(
    arguments: list[str], complaint: str, tmp_path: Path, capsys
) -> None:
    """`--per-class 0` started the services to ingest nothing, `--top-k 0` failed after the ingest,
    `--query` without `--pictures` was ignored without a word, and a missing `--pictures` or `--image-query`
    was found only once the services had started (or the ingest and the text queries had run)."""
    workdir = tmp_path / "demo"
    with pytest.raises(SystemExit) as usage:
        main(["demo", "--workdir", str(workdir), *arguments])
    assert usage.value.code == EXIT_USAGE
    assert complaint in capsys.readouterr().err
    assert not workdir.exists()  # no picture rendered, no service started


def test_the_page_serves_your_own_pictures_without_queries(monkeypatch, tmp_path: Path) -> None:
    """`--pictures DIR --web` demanded --query and --image-query, which the page then ignored."""
    served: list[tuple[DemoPlan, int]] = []

    def serve_page(
        workdir: Path, plan: DemoPlan, port: int, stopping: Callable[[], threading.Event], progress: bool
    ) -> None:
        served.append((plan, port))

    monkeypatch.setattr(demo.command, "serve_page", serve_page)
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    assert main(["demo", "--workdir", str(tmp_path), "--pictures", str(pictures), "--web"]) == EXIT_OK
    assert served == [(DemoPlan(pictures, "ViT-B/32", (), None, labelled=False), WEB_PORT)]


def test_a_demo_of_a_folder_with_no_picture_says_so(tiny_path: Path, tmp_path: Path, capsys) -> None:
    """Its searches failed with "NOT_FOUND: collection 'demo' does not exist: ingest into it first"."""
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "notes.txt").write_text("no picture")
    query = ["--query", "x", "--image-query", str(tmp_path / "pictures" / "notes.txt")]
    workdir = ["--workdir", str(tmp_path / "demo"), "--model", str(tiny_path), "--no-progress"]
    assert main(["demo", *workdir, "--pictures", str(tmp_path / "pictures"), *query]) == EXIT_FAILED
    said = capsys.readouterr().err
    assert f"no picture under {tmp_path / 'pictures'} could be ingested (0 failed, 1 skipped as no" in said

"""The thumbnail processes: pictures shared among them each get their own thumbnail, one that dies is
replaced, and none outlives the service that started it.

Each scenario runs in a process of its own, so that the only multiprocessing children it sees are the
thumbnail processes (this test process also holds the encoders' decoding processes)."""

import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search_service.server import default_thumbnail_workers
from search_service.thumbnails import STALE_PART_S, Thumbnails, make_thumbnail

PROJECT = Path(__file__).resolve().parent.parent

# One picture per id; then `action` on the one thumbnail process: "kill" it, or "wait" to be killed.
SCENARIO = """
import hashlib, io, json, multiprocessing, os, signal, sys
from pathlib import Path
from PIL import Image
from search_service.server import default_thumbnail_workers
from search_service.thumbnails import Thumbnails

def picture(shade):
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (shade, 90, 200)).save(buffer, "PNG")
    data = buffer.getvalue()
    return hashlib.sha256(data).hexdigest(), data

if __name__ == "__main__":
    folder, action = Path(sys.argv[1]), sys.argv[2]
    # Ctrl-C raises here, as in a terminal (a background job's shell starts it ignored, and so would the
    # workers be, whatever the service does).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    thumbnails = Thumbnails(folder, 10**8, workers=1)
    save = lambda made: thumbnails.making("pictures", [made]).place([made[0]])
    first, second, third = picture(10), picture(20), picture(30)
    save(first)
    [worker] = multiprocessing.active_children()
    if action == "wait":
        print(json.dumps({"worker": worker.pid}), flush=True)
        sys.stdin.read()
    os.kill(worker.pid, signal.SIGKILL)
    worker.join()
    save(second)  # finds the pool broken: logged, and replaced
    save(third)
    made = sorted(path.stem for path in (folder / "pictures").glob("*.jpg"))
    print(json.dumps({"made": made, "ids": [first[0], second[0], third[0]]}))
    thumbnails.close()
"""


def scenario(folder: Path, action: str) -> subprocess.Popen[str]:
    environment = {**os.environ, "PYTHONPATH": str(PROJECT)}
    return subprocess.Popen(
        [sys.executable, "-c", SCENARIO, str(folder), action],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


def test_thumbnail_processes_take_all_the_cores_but_two_from_one_to_sixteen() -> None:
    workers = [default_thumbnail_workers(cores) for cores in (1, 2, 3, 4, 16, 18, 64)]
    assert workers == [1, 1, 1, 2, 14, 16, 16]


def test_pictures_shared_among_processes_each_get_their_own_thumbnail_or_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def png(width: int, height: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (width, height), (width % 256, height % 256, 90)).save(buffer, "PNG")
        return buffer.getvalue()

    sizes = [(300, 100), (100, 300), None, (64, 64), (512, 128)]  # None: bytes that are no picture
    pictures = [png(*size) if size else b"not a picture" for size in sizes]
    ids = [hashlib.sha256(data).hexdigest() for data in pictures]
    thumbnails = Thumbnails(tmp_path, 10**8, workers=2)  # 5 pictures: tasks of 3 and 2
    try:
        with caplog.at_level(logging.WARNING, logger="search_service.thumbnails"):
            thumbnails.making("pictures", list(zip(ids, pictures, strict=True))).place(ids)
        made = {image_id: thumbnails.read("pictures", image_id) for image_id in ids}
    finally:
        thumbnails.close()
    expected = [(256, 85), (85, 256), None, (64, 64), (256, 64)]
    assert [Image.open(io.BytesIO(jpeg)).size if jpeg else None for jpeg in made.values()] == expected
    [warning] = caplog.messages
    assert warning.startswith(f"no thumbnail for {ids[2]} in 'pictures': cannot decode the picture")


@pytest.mark.parametrize("mode", ["P", "1", "L"])
def test_a_fine_pattern_shrinks_to_its_average_in_every_mode(mode: str) -> None:
    """Pillow shrinks palette and 1-bit pictures by nearest neighbour whatever the filter asked: a 1-pixel
    checkerboard came out as black and white noise, not grey."""
    checkerboard = ((np.indices((480, 640)).sum(axis=0) % 2) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(checkerboard).convert(mode).save(buffer, "PNG")
    pixels = np.asarray(Image.open(io.BytesIO(make_thumbnail(buffer.getvalue(), 10**8))), dtype=float)
    assert pixels.shape == (192, 256, 3) and abs(pixels.mean() - 127.5) < 3 and pixels.std() < 3


def test_a_photo_that_libjpeg_can_shrink_to_the_thumbnail_is_decoded_at_that_scale_not_resized() -> None:
    """A 500x375 photo (ImageNet's size) was decoded whole and resized to 256x192: twice the CPU of decoding
    it at half its size, 250x188, within a sixteenth of the thumbnail's size, with nothing left to resize."""
    rng = np.random.default_rng(7)
    smooth = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375))
    photo = io.BytesIO()
    smooth.save(photo, "JPEG", quality=95)
    thumbnail = Image.open(io.BytesIO(make_thumbnail(photo.getvalue(), 10**8)))
    assert thumbnail.size == (250, 188)
    # The same picture as the whole photo shrunk to that size.
    shrunk = np.asarray(smooth.resize((250, 188), Image.Resampling.BILINEAR), dtype=float)
    assert np.abs(np.asarray(thumbnail, dtype=float) - shrunk).mean() < 4
    # A picture smaller than the thumbnail is never shrunk (a sixteenth of 2 pixels is not 1).
    for size in [(2, 2), (1, 1), (3, 2), (255, 10)]:
        small = io.BytesIO()
        smooth.resize(size).save(small, "JPEG")
        assert Image.open(io.BytesIO(make_thumbnail(small.getvalue(), 10**8))).size == size


def test_a_start_removes_thumbnails_left_part_written_by_a_killed_process_long_ago(tmp_path) -> None:
    """A service killed mid-write left `tmp….part` files that nothing removed."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    left, writing = folder / "tmpleft.part", folder / "tmpwriting.part"
    for part in (left, writing):
        part.write_bytes(b"\xff\xd8")
    os.utime(left, (time.time() - STALE_PART_S - 1,) * 2)
    Thumbnails(tmp_path, 10**8, workers=1).close()
    assert not left.exists() and writing.exists()  # the other may be another service's, writing now


def test_a_thumbnail_process_that_dies_costs_its_pictures_and_is_replaced(tmp_path) -> None:
    process = scenario(tmp_path, "kill")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    report = json.loads(out)
    first, _, third = report["ids"]
    assert report["made"] == sorted([first, third])  # the second was in the dead process's hands
    assert "a thumbnail process died" in err


def test_a_thumbnail_process_ignores_the_ctrl_c_that_reaches_its_process_group(tmp_path) -> None:
    """Ctrl-C in a terminal reaches every process of the group: it ended the workers (a KeyboardInterrupt)
    while the service still finished its calls, and the pictures then in their hands lost their thumbnails.
    The service ends its workers itself."""
    process = scenario(tmp_path, "wait")
    assert process.stdout is not None
    worker = json.loads(process.stdout.readline())["worker"]
    status = Path(f"/proc/{worker}/status").read_text().splitlines()
    ignored = int(next(line.split()[1] for line in status if line.startswith("SigIgn:")), 16)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert ignored & (1 << (signal.SIGINT - 1))


def running(pid: int) -> bool:
    """Whether `pid` is alive: neither gone nor a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_thumbnail_processes_end_with_a_killed_service(tmp_path) -> None:
    process = scenario(tmp_path, "wait")
    assert process.stdout is not None
    worker = json.loads(process.stdout.readline())["worker"]
    assert running(worker)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    for _ in range(600):  # the worker notices that its parent is gone: a bounded poll of that condition
        if not running(worker):
            break
        threading.Event().wait(0.05)
    assert not running(worker)


def test_a_thumbnail_folder_that_cannot_be_written_stops_the_start_and_names_it(tmp_path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    folder = tmp_path / "a-file" / "thumbnails"
    flags = [
        "--milvus-uri",
        str(tmp_path / "milvus.db"),
        "--thumbnail-dir",
        str(folder),
        "--encoder",
        "127.0.0.1:1",
    ]
    started = subprocess.run(
        [sys.executable, "-m", "search_service", *flags, "--port", "0", "--metrics-port", "-1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT,
    )
    assert started.returncode == 1
    assert f"--thumbnail-dir {folder}: thumbnails cannot be written there (Not a directory)" in started.stderr
    assert not (tmp_path / "milvus.db").exists()  # refused before anything was made

"""Thumbnails of the stored pictures: small JPEGs named by the picture's id, one folder per collection.

Made once at ingestion from the bytes the service already holds, so that the page never needs the original
file. Decoding is bounded: the pixel count is checked from the header before any pixel is decoded, and
libjpeg decodes large JPEGs at a reduced scale. A picture whose thumbnail cannot be made is still stored; it
just has none.

They are made in worker processes (started with `spawn`, importing only this module and Pillow): decoding,
resizing, encoding and writing cost about 3 ms of CPU for a 500x375 photo on a 2-core machine, and Pillow's
JPEG encoder holds the interpreter lock, so in the service's own threads they capped an ingest at a few
hundred pictures a second whatever the encoder's speed.

A batch's thumbnails are made aside (temporary files) while its pictures are encoded, renamed into place
just before their rows are written (so a delete that finds a row finds its thumbnail, and removes it after
the row), and removed if their rows are not written.
"""

import contextlib
import io
import logging
import math
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from imagesearch.defaults import PICTURE_ID
from imagesearch.pictures import UnreadablePicture, fitted

from .names import COLLECTION_NAME

log = logging.getLogger(__name__)

LONGEST_SIDE = 256
JPEG_QUALITY = 85
# A part-written thumbnail this old was left by a process that died: a live service's own last while their
# batch is encoded and written (the encoder's and Milvus's deadlines, retries included: minutes at most).
STALE_PART_S = 3600.0
# A worker's share of a batch: each picture's id and thumbnail's place, and the future of what `write_aside`
# says of each.
Task = tuple[list[tuple[str, Path]], Future[list[tuple[str, str]]]]


def make_thumbnail(data: bytes, max_pixels: int) -> bytes:
    """A JPEG of the picture whose longest side is at most LONGEST_SIDE pixels (at least 15/16 of it, for a
    picture larger), orientation applied."""
    buffer = io.BytesIO()
    # Not `optimize`d: a sixth less CPU (0.5 ms of a 500x375 photo's 2.8) for a thumbnail 6 % larger.
    fitted(data, (LONGEST_SIDE, LONGEST_SIDE), max_pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _write_aside(path: Path, data: bytes, max_pixels: int) -> tuple[str, str]:
    """The picture's thumbnail written to a temporary file beside `path`: (its path, ""), or ("", why not)."""
    try:
        thumbnail = make_thumbnail(data, max_pixels)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, suffix=".part")
        try:
            with os.fdopen(descriptor, "wb") as part:
                part.write(thumbnail)
        except OSError:
            Path(temporary).unlink(missing_ok=True)
            raise
    except (UnreadablePicture, OSError) as error:
        return "", str(error)
    return temporary, ""


def write_aside(pictures: list[tuple[Path, bytes]], max_pixels: int) -> list[tuple[str, str]]:
    """A worker process's task: each (path, image bytes)'s thumbnail written beside its path; for each, the
    temporary file's path or why there is none."""
    return [_write_aside(path, data, max_pixels) for path, data in pictures]


def _end_with_the_service() -> None:
    """A worker process's first step: it exits once the service has, however that ended (SIGKILL too), and
    not before: Ctrl-C in a terminal reaches the whole process group, and a worker it ended broke the pool
    while the service was still finishing its calls."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    service = multiprocessing.parent_process()
    if service is not None:
        threading.Thread(target=lambda: (service.join(), os._exit(0)), daemon=True).start()


class Thumbnails:
    """`folder/<collection>/<id>.jpg`, made aside by `workers` processes and renamed into place (`making`)."""

    def __init__(self, folder: Path, max_pixels: int, workers: int) -> None:
        self.folder = folder
        self.max_pixels = max_pixels
        self.workers = workers
        self._replacing = threading.Lock()
        self._remove_stale_parts()
        self._pool = self._new_pool()

    def _remove_stale_parts(self) -> None:
        """Removes the temporary files of thumbnails whose writing process was killed mid-write."""
        stale = time.time() - STALE_PART_S
        for part in self.folder.glob("*/*.part"):
            with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove: never stops a start
                if part.stat().st_mtime < stale:
                    part.unlink()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers, multiprocessing.get_context("spawn"), initializer=_end_with_the_service
        )

    def _path(self, collection: str, image_id: str) -> Path:
        # Callers check both already; this keeps any other name (the collection's is a folder) from becoming
        # a path.
        if not COLLECTION_NAME.fullmatch(collection) or not PICTURE_ID.fullmatch(image_id):
            raise ValueError(f"not a collection and id: {collection!r}, {image_id!r}")
        return self.folder / collection / f"{image_id}.jpg"

    def making(self, collection: str, pictures: Sequence[tuple[str, bytes]]) -> "Making":
        """Starts making the thumbnail of each (id, image bytes) aside, in the worker processes.

        The pictures go to the workers in one task per worker, not one per picture: handing a task to a
        process cost the service about 0.25 ms of its own CPU, a third of all its work on a picture."""
        size = max(1, math.ceil(len(pictures) / self.workers))
        pool, tasks = self._pool, list[Task]()
        try:
            for start in range(0, len(pictures), size):
                chunk = pictures[start : start + size]
                places = [(image_id, self._path(collection, image_id)) for image_id, _ in chunk]
                aside = [(place, data) for (_, place), (_, data) in zip(places, chunk, strict=True)]
                tasks.append((places, pool.submit(write_aside, aside, self.max_pixels)))
        except BrokenProcessPool:
            self.lost(pool, collection)
        return Making(self, pool, collection, tasks)

    def lost(self, broken: ProcessPoolExecutor, collection: str) -> None:
        """A worker process died: the thumbnails then in the workers' hands are lost, and the workers are
        started again, once, whoever finds them broken first."""
        with self._replacing:
            if self._pool is broken:
                log.warning("a thumbnail process died; pictures ingested into %r may lack one", collection)
                self._pool = self._new_pool()
        broken.shutdown(wait=False)

    def close(self) -> None:
        self._pool.shutdown()

    def read(self, collection: str, image_id: str) -> bytes | None:
        try:
            return self._path(collection, image_id).read_bytes()
        except FileNotFoundError:
            return None

    def lacking(self, collection: str, ids: Iterable[str]) -> set[str]:
        """Those of `ids` that have no thumbnail."""
        return {image_id for image_id in ids if not self._path(collection, image_id).exists()}

    def remove(self, collection: str, ids: Iterable[str]) -> None:
        for image_id in ids:
            self._path(collection, image_id).unlink(missing_ok=True)


class Making:
    """A batch's thumbnails being made aside; `place` puts those of the pictures to store in place. As a
    context manager, it removes on leaving whatever was not placed."""

    def __init__(
        self,
        thumbnails: Thumbnails,
        pool: ProcessPoolExecutor,
        collection: str,
        tasks: list[Task],
    ) -> None:
        self._thumbnails, self._pool, self._collection, self._tasks = thumbnails, pool, collection, tasks
        self._aside: dict[str, tuple[Path, Path]] = {}  # (made aside, its place), by id
        self._unmade: dict[str, str] = {}  # why, by id

    def __enter__(self) -> "Making":
        return self

    def __exit__(self, *_: object) -> None:
        """Removes the thumbnails made aside and never placed."""
        self.wait()
        aside, self._aside = self._aside, {}
        for path, _ in aside.values():
            with contextlib.suppress(OSError):  # a part left is removed at a later start
                path.unlink()

    def wait(self) -> None:
        """Waits for the workers."""
        tasks, self._tasks = self._tasks, []
        broken = False
        for places, future in tasks:
            try:
                made = future.result()
            except BrokenProcessPool:  # the other tasks' thumbnails may still have been made
                broken = True
                continue
            for (image_id, place), (aside, problem) in zip(places, made, strict=True):
                if problem:
                    self._unmade[image_id] = problem
                else:
                    self._aside[image_id] = (Path(aside), place)
        if broken:
            self._thumbnails.lost(self._pool, self._collection)

    def place(self, ids: Iterable[str]) -> None:
        """Renames the thumbnails of `ids` into place: readers see the old file or the whole new one, never a
        part. Why one of them could not be made is logged (only for these: the others are not stored)."""
        self.wait()
        for image_id in ids:
            if (why := self._unmade.get(image_id)) is not None:
                log.warning("no thumbnail for %s in %r: %s", image_id, self._collection, why)
            if (made := self._aside.pop(image_id, None)) is None:
                continue
            path, place = made
            try:
                os.replace(path, place)
            except OSError as error:
                log.warning("no thumbnail for %s in %r: %s", image_id, self._collection, error)
                path.unlink(missing_ok=True)

"""Thumbnails of the stored pictures: small JPEGs named by the picture's id, one folder per collection.

Made once at ingestion from the bytes the service already holds, so that the page never needs the original
file. Decoding is bounded: the pixel count is checked from the header before any pixel is decoded, and
libjpeg decodes large JPEGs at a reduced scale. A picture whose thumbnail cannot be made is still stored; it
just has none.

They are made in worker processes (started with `spawn`, importing only this module and Pillow): decoding,
resizing, encoding and writing cost about 3 ms of CPU for a 500x375 photo on a 2-core machine, and Pillow's
JPEG encoder holds the interpreter lock, so in the service's own threads they capped an ingest at a few
hundred pictures a second whatever the encoder's speed.
"""

import contextlib
import io
import logging
import math
import multiprocessing
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from imagesearch.pictures import UnreadablePicture, fitted

from .names import COLLECTION_NAME

log = logging.getLogger(__name__)

LONGEST_SIDE = 256
JPEG_QUALITY = 85
_ID = re.compile(r"[0-9a-f]{64}")
# A part-written thumbnail this old was left by a process that died writing it (another service on the same
# folder writes its own for milliseconds).
STALE_PART_S = 3600.0


def make_thumbnail(data: bytes, max_pixels: int) -> bytes:
    """A JPEG of the picture whose longest side is at most LONGEST_SIDE pixels, orientation applied."""
    buffer = io.BytesIO()
    fitted(data, (LONGEST_SIDE, LONGEST_SIDE), max_pixels).save(
        buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True
    )
    return buffer.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, suffix=".part")
    try:
        with os.fdopen(descriptor, "wb") as part:
            part.write(data)
        os.replace(temporary, path)
    except OSError:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_thumbnail(path: Path, data: bytes, max_pixels: int) -> str:
    """The picture's thumbnail written to `path`; or why not."""
    try:
        _write_atomically(path, make_thumbnail(data, max_pixels))
    except (UnreadablePicture, OSError) as error:
        return str(error)
    return ""


def write_thumbnails(pictures: list[tuple[Path, bytes]], max_pixels: int) -> list[str]:
    """A worker process's task: each (path, image bytes)'s thumbnail written; for each, why not ("": made)."""
    return [_write_thumbnail(path, data, max_pixels) for path, data in pictures]


def _end_with_the_service() -> None:
    """A worker process's first step: it exits once the service has, however that ended (SIGKILL too)."""
    service = multiprocessing.parent_process()
    if service is not None:
        threading.Thread(target=lambda: (service.join(), os._exit(0)), daemon=True).start()


class Thumbnails:
    """`folder/<collection>/<id>.jpg`, written atomically (a temporary file renamed into place) by `workers`
    processes."""

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
        if not COLLECTION_NAME.fullmatch(collection) or not _ID.fullmatch(image_id):
            raise ValueError(f"not a collection and id: {collection!r}, {image_id!r}")
        return self.folder / collection / f"{image_id}.jpg"

    def save(self, collection: str, pictures: Sequence[tuple[str, bytes]]) -> None:
        """Makes and writes the thumbnail of each (id, image bytes); a failure is logged and skipped. A worker
        process that dies costs the thumbnails of the pictures then in the workers' hands, and is replaced.

        The pictures go to the workers in one task per worker, not one per picture: handing a task to a
        process cost the service about 0.25 ms of its own CPU, a third of all its work on a picture."""
        pool, limit = self._pool, self.max_pixels
        size = max(1, math.ceil(len(pictures) / self.workers))
        chunks = [pictures[start : start + size] for start in range(0, len(pictures), size)]
        tasks = [[(self._path(collection, image_id), data) for image_id, data in chunk] for chunk in chunks]
        try:
            futures = [pool.submit(write_thumbnails, task, limit) for task in tasks]
            problems = [
                (image_id, problem)
                for chunk, future in zip(chunks, futures, strict=True)
                for (image_id, _), problem in zip(chunk, future.result(), strict=True)
            ]
        except BrokenProcessPool:
            log.warning("a thumbnail process died; pictures just stored in %r may lack one", collection)
            self._replace(pool)
            return
        for image_id, problem in problems:
            if problem:
                log.warning("no thumbnail for %s in %r: %s", image_id, collection, problem)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._replacing:
            if self._pool is broken:
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

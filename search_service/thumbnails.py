"""Thumbnails of the stored pictures: small JPEGs named by the picture's id, one folder per collection.

Made once at ingestion from the bytes the service already holds, so that the page never needs the original
file. Decoding is cheap and bounded: the pixel count is checked from the header before any pixel is decoded,
and libjpeg decodes large JPEGs at a reduced scale. A picture whose thumbnail cannot be made is still stored;
it just has none.
"""

import io
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, ImageOps

from imagesearch.pictures import to_rgb

from .store import is_milvus_lite

log = logging.getLogger(__name__)

LONGEST_SIDE = 256
JPEG_QUALITY = 85
_ID = re.compile(r"[0-9a-f]{64}")
# Milvus's own rule for collection names; checked again here because the name becomes a folder.
_COLLECTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


class ThumbnailError(ValueError):
    """The picture's thumbnail cannot be made; the message says why."""


def make_thumbnail(data: bytes, max_pixels: int) -> bytes:
    """A JPEG of the picture whose longest side is at most LONGEST_SIDE pixels, orientation applied."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ThumbnailError(f"{width}x{height} pixels is over the limit of {max_pixels} pixels")
            image.draft(image.mode, (LONGEST_SIDE, LONGEST_SIDE))  # JPEG only: libjpeg scales while decoding
            image = ImageOps.exif_transpose(image)
            image.thumbnail((LONGEST_SIDE, LONGEST_SIDE))
            rgb = to_rgb(image)
    except ThumbnailError:
        raise
    except Exception as error:
        raise ThumbnailError(f"cannot decode the picture: {error}") from None
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
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


def folder_for(thumbnail_dir: str, milvus_uri: str) -> Path:
    """--thumbnail-dir; by default beside a Milvus Lite file (`milvus.db.thumbnails`), or `./thumbnails`."""
    if thumbnail_dir:
        return Path(thumbnail_dir)
    return Path(f"{milvus_uri}.thumbnails") if is_milvus_lite(milvus_uri) else Path("thumbnails")


class Thumbnails:
    """`folder/<collection>/<id>.jpg`, written atomically (a temporary file renamed into place)."""

    def __init__(self, folder: Path, max_pixels: int) -> None:
        self.folder = folder
        self.max_pixels = max_pixels

    def _path(self, collection: str, image_id: str) -> Path:
        # Callers check both already; this keeps any other name from becoming a path.
        if not _COLLECTION.fullmatch(collection) or not _ID.fullmatch(image_id):
            raise ValueError(f"not a collection and id: {collection!r}, {image_id!r}")
        return self.folder / collection / f"{image_id}.jpg"

    def save(self, collection: str, pictures: Iterable[tuple[str, bytes]]) -> None:
        """Makes and writes the thumbnail of each (id, image bytes); a failure is logged and skipped."""
        for image_id, data in pictures:
            path = self._path(collection, image_id)
            try:
                _write_atomically(path, make_thumbnail(data, self.max_pixels))
            except (ThumbnailError, OSError) as error:
                log.warning("no thumbnail for %s in %r: %s", image_id, collection, error)

    def read(self, collection: str, image_id: str) -> bytes | None:
        try:
            return self._path(collection, image_id).read_bytes()
        except FileNotFoundError:
            return None

    def remove(self, collection: str, ids: Iterable[str]) -> None:
        for image_id in ids:
            self._path(collection, image_id).unlink(missing_ok=True)

"""Decoded pictures as people see them: the encoder's input, the search service's thumbnails and the command
line's grids. Needs Pillow, which both services' extras and the SDK's `client` extra install (the SDK's core
does not import this)."""

import importlib.util
import io
import itertools
import math
import re
import warnings

import numpy as np
from PIL import ExifTags, Image

from .iso_media import is_heic

_SIXTEEN_BIT_GREY = {"I;16", "I;16L", "I;16B", "I;16N"}
# The formats both services decode: Pillow's most used decoders, and no others (its rarer ones, PSD or FITS
# say, have had the most security flaws). AVIF only where this Pillow has its plugin (11.2 on): Image.open
# fails with a KeyError on a format it does not know. Looked up, not loaded: Image.init() would load every
# plugin (90 ms) in each process that imports this, where Image.open loads them only when a picture needs it.
_HAS_AVIF = importlib.util.find_spec("PIL.AvifImagePlugin") is not None
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", *(("AVIF",) if _HAS_AVIF else ()))
_NAMED = [name.replace("WEBP", "WebP") for name in FORMATS]
_NAMED_FORMATS = f"{', '.join(_NAMED[:-1])} or {_NAMED[-1]}"
NOT_A_PICTURE = f"not a recognised image format ({_NAMED_FORMATS})"
# Said by name, since their owners know them as .HEIC files, not as an unknown format.
HEIC = (
    f"a HEIC photo (phones' format), which is not read: convert it to JPEG (formats read: {_NAMED_FORMATS})"
)


def why_not_a_picture(data: bytes) -> str:
    """What to tell of `data`, which no decoder here recognised."""
    return HEIC if is_heic(data) else NOT_A_PICTURE


# How to turn a picture upright for each EXIF orientation, as Pillow's ImageOps.exif_transpose does.
_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_TRANSPOSED = (5, 6, 7, 8)  # the orientations whose upright picture has its width and height swapped
_SIZE_KEPT = 15 / 16  # of the size that fits a box, the least that `fitted` may give


def orientation(image: Image.Image) -> int:
    """The picture's EXIF orientation, 1-8; 1 (as stored) when its EXIF cannot be read or says no more."""
    try:
        value = int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:
        return 1
    return value if value in _TURNS else 1


_START_OF_SCAN = b"\xff\xda"  # a marker: never in a JPEG's coded data, where 0xff is always escaped
# Found by a compiled pattern: three times faster than bytes.count (30 against 89 us in an 88 KB photo), on
# the GPU's routing of every JPEG; and it stops at the limit, where a file made of markers would have it
# make millions of matches.
_SCANS = re.compile(re.escape(_START_OF_SCAN))
# A progressive JPEG has about 10 scans, and each one walks the whole picture again: 0.6 MB of a repeated
# cheap scan kept a decoding process busy for half a minute at 4000x4000.
MAX_JPEG_SCANS = 100


def upright(image: Image.Image) -> Image.Image:
    """The picture turned as its EXIF orientation says. Not ImageOps.exif_transpose: it also rewrites the
    EXIF, and fails on one mistyped tag, in a picture whose pixels and orientation read well."""
    turn = _TURNS.get(orientation(image))
    return image.transpose(turn) if turn is not None else image


def _on_white(image: Image.Image) -> Image.Image:
    """Transparent pixels become white, as a viewer shows them, rather than whatever colour they hide. Pasted
    through its alpha onto white: the same pixels as alpha_composite over white, and half its memory (an
    8000x8000 palette PNG of 61 KB needed 1.1 GB)."""
    rgba = image.convert("RGBA")
    picture = Image.new("RGB", rgba.size, (255, 255, 255))
    picture.paste(rgba, mask=rgba)
    return picture


def to_rgb(image: Image.Image) -> Image.Image:
    """The picture in RGB: transparency on white, 16-bit greys by their top 8 bits, float greys from 0-1."""
    if image.mode in _SIXTEEN_BIT_GREY:
        # Pillow's own convert would clip everything above 255 to white. A 16-bit grey is its top 8 bits
        # however dark it is (200 of 65535 is black, not 200 of 255). Shifted as it is, not as int64: a
        # 122 KB PNG of 8000x8000 needed 1.6 GB that way.
        return Image.fromarray((np.asarray(image) >> 8).astype(np.uint8)).convert("RGB")
    if image.mode == "I":
        # A 32-bit grey says nothing of its depth, so its values tell.
        pixels = np.asarray(image)
        eight_bit = np.clip(pixels >> 8 if pixels.max() > 255 else pixels, 0, 255)
        return Image.fromarray(eight_bit.astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        # Pillow's own convert would read 0.5 as black. Floats from 0 to 1 are how float greys are usually
        # kept; larger values, like a 32-bit "I" grey's, are taken as levels of 255.
        levels = np.nan_to_num(np.asarray(image, dtype=np.float64))
        if levels.max() <= 1.0:
            levels = levels * 255.0
        return Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return _on_white(image)
    return image.convert("RGB")


class UnreadablePicture(ValueError):
    """The picture cannot be decoded here, or is over a limit; the message says why."""


def _over_the_scan_limit(data: bytes) -> bool:
    return next(itertools.islice(_SCANS.finditer(data), MAX_JPEG_SCANS, None), None) is not None


def open_within(data: bytes, max_pixels: int) -> Image.Image:
    """The picture in `data` with only its header read, once it is known to be of FORMATS, of at most
    `max_pixels` pixels and, a JPEG, of at most MAX_JPEG_SCANS scans; UnreadablePicture saying which limit
    it is over. Pillow's own refusals (not a picture, a broken header) are left to the caller to word."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: max_pixels is the limit here
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    width, height = image.size
    if width * height > max_pixels:
        raise UnreadablePicture(
            f"{width}x{height} pixels is over the limit of {max_pixels} pixels (decompression bomb?)"
        )
    if width == 0 or height == 0:
        raise UnreadablePicture(f"{width}x{height} pixels: the image is empty")
    # MPO: a phone's multi-picture JPEG, whose first picture Pillow decodes as any JPEG.
    if image.format in ("JPEG", "MPO") and _over_the_scan_limit(data):
        scans = data.count(_START_OF_SCAN)  # only to say how many
        raise UnreadablePicture(f"a JPEG of {scans} scans is over the limit of {MAX_JPEG_SCANS} scans")
    return image


def _decoded_size_wanted(image: Image.Image, box: tuple[int, int]) -> tuple[int, int]:
    """The least size to decode the picture at, as stored (before it is turned upright), for `box`: its size
    shrunk to fit, less a sixteenth. libjpeg decodes a JPEG at 1/2 (1/4, 1/8) of its size for less work, and
    one whose reduced size is within that sixteenth needs no resizing at all: a 500x375 photo (ImageNet's
    size) decoded at 250x188 for a 256-pixel thumbnail took half the CPU of one decoded whole and resized
    (reading its coded data, which no scale saves, is most of what is left)."""
    width, height = (box[1], box[0]) if orientation(image) in _TRANSPOSED else box
    scale = min(width / image.width, height / image.height, 1.0)
    return math.ceil(image.width * scale * _SIZE_KEPT), math.ceil(image.height * scale * _SIZE_KEPT)


def fitted(data: bytes, box: tuple[int, int], max_pixels: int) -> Image.Image:
    """The picture in `data` upright and in RGB, shrunk (never enlarged) to fit `box`, to at least 15/16 of
    the size that fills it: a thumbnail or a tile.

    Checked by `open_within` before any pixel is decoded; libjpeg decodes a large JPEG at a reduced scale."""
    try:
        opened = open_within(data, max_pixels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opened.draft(opened.mode, _decoded_size_wanted(opened, box))
            image = upright(opened)
            if image.mode in ("1", "P"):  # else shrunk by nearest neighbour whatever the filter: aliased
                image = to_rgb(image)
            # Bilinear (antialiased, as Pillow resizes): a fifth less CPU than bicubic, Pillow's default, and
            # no difference to see at this size; every picture of an ingest waits for its thumbnail.
            image.thumbnail(box, Image.Resampling.BILINEAR)
            return to_rgb(image)
    except UnreadablePicture:
        raise
    except Exception as error:
        raise UnreadablePicture(f"cannot decode the picture: {error}") from None

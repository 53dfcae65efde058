"""Turning untrusted image bytes into RGB pictures, with limits checked before any pixel is decoded."""

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Our own pixel limit is checked from the header; Pillow's global bomb check would only duplicate it.
Image.MAX_IMAGE_PIXELS = None


class ImageRejected(ValueError):
    """The bytes are not an image this service will encode; the message says why."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int


_SIXTEEN_BIT_GREY = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Transparent pixels become white, as a viewer shows them, rather than whatever colour they hide."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_GREY:
        pixels = np.asarray(image, dtype=np.uint32)
        # 16-bit greys keep their top 8 bits; Pillow's own convert would clip everything above 255 to white.
        eight_bit = pixels >> 8 if pixels.max() > 255 else pixels
        return Image.fromarray(eight_bit.astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return _flatten_alpha(image)
    return image.convert("RGB")


def smallest_useful_side(model_resolution: int) -> int:
    """How small a large picture may be decoded for a model: twice its input, so that CLIP's own bicubic
    resize still does the last step."""
    return 2 * model_resolution


def decode_image(data: bytes, limits: ImageLimits, smallest_side: int) -> Image.Image:
    """The first frame of `data`, EXIF orientation applied, as an RGB picture; ImageRejected otherwise.

    A JPEG much larger than `smallest_side` is decoded by libjpeg at 1/2, 1/4 or 1/8 scale, never below
    `smallest_side` on either side: a 12-megapixel photo reaches the model about 5 times sooner
    (bench/encoder.py), and what CLIP sees after its own resize barely changes.
    """
    if not data:
        raise ImageRejected("empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageRejected(f"{len(data)} bytes is over the limit of {limits.max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("not a recognised image format (JPEG, PNG, GIF, WebP, BMP or TIFF)") from None
    except Exception as error:
        raise ImageRejected(f"unreadable image header: {error}") from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageRejected(
            f"{width}x{height} pixels is over the limit of {limits.max_pixels} pixels (decompression bomb?)"
        )
    if width == 0 or height == 0:
        raise ImageRejected(f"{width}x{height} pixels: the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.seek(0)
            image.draft(image.mode, (smallest_side, smallest_side))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except Exception as error:
        raise ImageRejected(f"cannot decode {image.format or 'image'} data: {error}") from None

"""Turning untrusted image bytes into CLIP's input pixels, with limits checked before any pixel is decoded.

Torch-free on purpose: the decoding processes import this module, and importing torch would cost each of them
seconds and hundreds of megabytes.
"""

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from imagesearch.pictures import (
    UnreadablePicture,
    open_within,
    orientation,
    to_rgb,
    upright,
    why_not_a_picture,
)

# Our own pixel limit is checked from the header; Pillow's global bomb check would only duplicate it.
Image.MAX_IMAGE_PIXELS = None


class UnencodableImage(ValueError):
    """The bytes are not an image this service will encode; the message says why."""


@dataclass(frozen=True)
class RejectedImage:
    """The outcome for an image that gets no vector: why, in words that do not depend on its position."""

    reason: str


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class DeviceJpeg:
    """A JPEG the GPU decodes as libjpeg would: its bytes, the EXIF orientation (1-8) still to apply, and its
    size."""

    data: bytes
    orientation: int
    pixels: int


_END_OF_IMAGE = b"\xff\xd9"
# A JPEG whose components are labelled R, G, B (and that has no JFIF or Adobe marker) holds RGB: libjpeg
# decodes it so, where nvJPEG would take it for YCbCr and give wrong colours without an error.
_RGB_COMPONENT_IDS = tuple(b"RGB")
STRIP_ASPECT = 16  # long side over short side, past which only the crop is resized


def smallest_useful_side(model_resolution: int) -> int:
    """How small a large picture may be decoded for a model: twice its input, so that CLIP's own bicubic
    resize still does the last step."""
    return 2 * model_resolution


def open_checked(data: bytes, limits: ImageLimits) -> Image.Image:
    """The picture in `data` with only its header read, once its size is known to be within `limits`."""
    if not data:
        raise UnencodableImage("empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise UnencodableImage(f"{len(data)} bytes is over the limit of {limits.max_bytes} bytes")
    try:
        return open_within(data, limits.max_pixels)
    except UnreadablePicture as over_a_limit:
        raise UnencodableImage(str(over_a_limit)) from None
    except UnidentifiedImageError:
        raise UnencodableImage(why_not_a_picture(data)) from None
    except Exception as error:
        raise UnencodableImage(f"unreadable image header: {error}") from None


def decode_image(data: bytes, limits: ImageLimits, smallest_side: int) -> Image.Image:
    """The first frame of `data`, EXIF orientation applied, as an RGB picture; UnencodableImage otherwise.

    A JPEG much larger than `smallest_side` is decoded by libjpeg at 1/2, 1/4 or 1/8 scale, never below
    `smallest_side` on either side: a 12-megapixel photo reaches the model about 5 times sooner
    (bench/encoder.py), and what CLIP sees after its own resize barely changes.
    """
    image = open_checked(data, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.seek(0)
            image.draft(image.mode, (smallest_side, smallest_side))
            image.load()
            return to_rgb(upright(image))
    except Exception as error:
        raise UnencodableImage(f"cannot decode {image.format or 'image'} data: {error}") from None


def resized_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(width, height) after CLIP's Resize(resolution): the short side becomes `resolution`, and the long
    side keeps the aspect ratio, rounded down (torchvision's rule)."""
    if width <= height:
        return resolution, int(resolution * height / width)
    return int(resolution * width / height), resolution


def centre_crop_offsets(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(left, top) of CLIP's CenterCrop(resolution) in a picture at least that large (torchvision's rule)."""
    return round((width - resolution) / 2.0), round((height - resolution) / 2.0)


def is_a_strip(width: int, height: int) -> bool:
    """Whether CLIP's resize would make the picture over STRIP_ASPECT times longer than its input: a
    60000x1 PNG of 259 bytes would become 224 x 13 million pixels, gigabytes, before the crop."""
    return max(width, height) > STRIP_ASPECT * min(width, height)


def clip_pixels(image: Image.Image, resolution: int) -> np.ndarray:
    """CLIP's resize and centre crop of an RGB picture: (resolution, resolution, 3) uint8, pixel for pixel
    what CLIP's own preprocessing feeds its ToTensor (tested), without importing torch. A strip has only
    its crop resized: the same filter over the same pixels, to within a level or two of rounding."""
    width, height = resized_size(image.width, image.height, resolution)
    left, top = centre_crop_offsets(width, height, resolution)
    if is_a_strip(image.width, image.height):
        x_scale, y_scale = image.width / width, image.height / height
        box = (left * x_scale, top * y_scale, (left + resolution) * x_scale, (top + resolution) * y_scale)
        return np.array(image.resize((resolution, resolution), Image.Resampling.BICUBIC, box=box))
    resized = image.resize((width, height), Image.Resampling.BICUBIC)
    return np.array(resized.crop((left, top, left + resolution, top + resolution)))  # a writable copy


def pixels_for_clip(data: bytes, limits: ImageLimits, resolution: int) -> np.ndarray | RejectedImage:
    """Untrusted bytes to CLIP's input pixels, or why they have none."""
    try:
        return clip_pixels(decode_image(data, limits, smallest_useful_side(resolution)), resolution)
    except UnencodableImage as rejection:
        return RejectedImage(str(rejection))


def small_jpeg() -> DeviceJpeg:
    """A 16x16 JPEG of the kind the device decodes, upright, to try its decoder with."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (128, 64, 32)).save(buffer, "JPEG")
    return DeviceJpeg(buffer.getvalue(), 1, 16 * 16)


def jpeg_for_device(data: bytes, limits: ImageLimits) -> DeviceJpeg | None:
    """`data` as a JPEG that nvJPEG decodes as libjpeg would (to a level or two of colour upsampling), once
    within `limits`; None for what only the PIL path does right: other formats, CMYK, greyscale and
    Adobe-marked JPEGs, components labelled RGB, strips, data that does not end where a JPEG ends (truncated
    files, trailing bytes). UnencodableImage past a limit."""
    image = open_checked(data, limits)
    if image.format != "JPEG" or image.mode != "RGB" or "adobe" in image.info or is_a_strip(*image.size):
        return None
    if tuple(component[0] for component in getattr(image, "layer", ())) == _RGB_COMPONENT_IDS:
        return None
    if not data.endswith(_END_OF_IMAGE):
        return None
    return DeviceJpeg(data, orientation(image), image.width * image.height)

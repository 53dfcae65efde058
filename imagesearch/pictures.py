"""Decoded pictures as people see them, for both services: the encoder's input and the search service's
thumbnails. Needs Pillow, which both services' extras install (the SDK's core does not import this)."""

import numpy as np
from PIL import Image

_SIXTEEN_BIT_GREY = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def _on_white(image: Image.Image) -> Image.Image:
    """Transparent pixels become white, as a viewer shows them, rather than whatever colour they hide."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """The picture in RGB: transparency on white, 16-bit greys by their top 8 bits."""
    if image.mode in _SIXTEEN_BIT_GREY:
        pixels = np.asarray(image, dtype=np.uint32)
        # Pillow's own convert would clip everything above 255 to white.
        eight_bit = pixels >> 8 if pixels.max() > 255 else pixels
        return Image.fromarray(eight_bit.astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return _on_white(image)
    return image.convert("RGB")

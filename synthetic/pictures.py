"""A seeded renderer of coloured shapes on textured backgrounds, photo-sized and JPEG-compressed.

Every picture carries its labels, and the same seed always renders the same set.
"""

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 215, 40),
    "orange": (245, 135, 25),
    "purple": (140, 50, 180),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
BACKGROUNDS = ("plain", "textured", "striped", "gradient")
SIZE = (320, 240)
CAPTION_TEMPLATES = (
    "a {color} {shape}",
    "a photo of a {color} {shape}",
    "a picture of a {color} {shape}",
    "{color} {shape}",
    "a {color} {shape} on a {background} background",
    "a drawing of a {shape} that is {color}",
)


@dataclass(frozen=True)
class Picture:
    jpeg: bytes
    shape: str
    color: str
    background: str


def classes() -> list[tuple[str, str]]:
    """Every (color, shape) pair, colour-major."""
    return [(color, shape) for color in COLORS for shape in SHAPES]


def _outline(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    def polygon(corners: int, radii: list[float]) -> list[tuple[float, float]]:
        return [
            (
                cx + radii[i % len(radii)] * math.cos(angle + 2 * math.pi * i / corners),
                cy + radii[i % len(radii)] * math.sin(angle + 2 * math.pi * i / corners),
            )
            for i in range(corners)
        ]

    if shape == "square":
        return polygon(4, [radius])
    if shape == "triangle":
        return polygon(3, [radius])
    if shape == "hexagon":
        return polygon(6, [radius])
    if shape == "star":
        return polygon(10, [radius, radius * 0.42])
    if shape == "cross":
        arm = radius * 0.34
        points = [(arm, radius), (arm, arm), (radius, arm), (radius, -arm), (arm, -arm), (arm, -radius)]
        points += [(-x, -y) for x, y in points]
        cos, sin = math.cos(angle), math.sin(angle)
        return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]
    raise ValueError(f"unknown shape {shape!r}")


def _background(kind: str, rng: np.random.Generator) -> Image.Image:
    width, height = SIZE
    level = rng.uniform(85, 175)
    tint = rng.uniform(-18, 18, size=3)
    base = np.full((height, width, 3), level, dtype=np.float32) + tint
    if kind == "textured":
        base += rng.normal(0, 22, size=(height, width, 1))
    elif kind == "striped":
        period = rng.uniform(10, 40)
        stripes = np.sin(np.arange(width) * 2 * math.pi / period)[None, :, None]
        base += 25 * stripes
    elif kind == "gradient":
        base += np.linspace(-35, 35, height)[:, None, None]
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(1)) if kind == "textured" else image


def render(color: str, shape: str, rng: np.random.Generator) -> Picture:
    """One picture of a `color` `shape` on a random background."""
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    image = _background(background, rng)
    radius = rng.uniform(45, 95)
    # Keep the shape inside the centred square that CLIP's centre crop keeps.
    left = (SIZE[0] - SIZE[1]) / 2
    cx = rng.uniform(left + radius, left + SIZE[1] - radius)
    cy = rng.uniform(radius, SIZE[1] - radius)
    fill = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in COLORS[color])
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    else:
        draw.polygon(_outline(shape, cx, cy, radius, rng.uniform(0, 2 * math.pi)), fill=fill)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(
        0, rng.uniform(2, 10), size=(SIZE[1], SIZE[0], 3)
    )
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
        buffer, "JPEG", quality=int(rng.integers(45, 95))
    )
    return Picture(buffer.getvalue(), shape, color, background)


def camera_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """An unlabelled picture at a camera's size with a photo's kind of detail (smooth gradients, grain,
    discs of several colours), for measuring what large pictures cost."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width]
    pixels = np.stack([columns / width, rows / height, (rows + columns) / (width + height)], -1) * 255
    pixels += rng.normal(0, 8, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y, radius = (
            rng.integers(0, width),
            rng.integers(0, height),
            rng.integers(height // 20, height // 5),
        )
        draw.ellipse(
            (x - radius, y - radius, x + radius, y + radius), fill=tuple(rng.integers(0, 256, 3).tolist())
        )
    return image


def render_set(per_class: int, seed: int) -> list[Picture]:
    """`per_class` pictures of every (color, shape), in a seeded order."""
    rng = np.random.default_rng(seed)
    pictures = [render(color, shape, rng) for _ in range(per_class) for color, shape in classes()]
    order = rng.permutation(len(pictures))
    return [pictures[i] for i in order]


def caption(picture: Picture, rng: np.random.Generator) -> str:
    """One of several ways to describe the picture."""
    template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
    return template.format(color=picture.color, shape=picture.shape, background=picture.background)

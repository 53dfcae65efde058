"""Contact sheets of search hits, like the Milvus tutorial's: thumbnails in rows of 5, each labelled."""

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .files import named_files
from .models import Hit

TILE = (220, 165)
LABEL_HEIGHT = 40
COLUMNS = 5
MARGIN = 8


def _tile(uri: str) -> Image.Image:
    """The picture at `uri`, fitted to a tile; grey when no file there can be read."""
    for path in named_files(uri):
        try:
            with Image.open(path) as picture:
                return ImageOps.pad(ImageOps.exif_transpose(picture).convert("RGB"), TILE, color="white")
        except OSError:
            continue
    return Image.new("RGB", TILE, (200, 200, 200))


def write_grid(hits: Sequence[Hit], out: str | Path, title: str = "") -> Path:
    """Writes a PNG of the hits whose URIs are readable files; unreadable ones get a grey tile."""
    rows = max(1, -(-len(hits) // COLUMNS))
    header = 34 if title else 0
    width = COLUMNS * (TILE[0] + MARGIN) + MARGIN
    height = header + rows * (TILE[1] + LABEL_HEIGHT + MARGIN) + MARGIN
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    if title:
        draw.text((MARGIN, 8), title, fill="black", font=ImageFont.load_default(size=18))
    for rank, hit in enumerate(hits, start=1):
        column, row = (rank - 1) % COLUMNS, (rank - 1) // COLUMNS
        x = MARGIN + column * (TILE[0] + MARGIN)
        y = header + MARGIN + row * (TILE[1] + LABEL_HEIGHT + MARGIN)
        sheet.paste(_tile(hit.uri), (x, y))
        draw.text((x, y + TILE[1] + 3), f"#{rank}  score {hit.score:.3f}", fill="black", font=font)
        draw.text((x, y + TILE[1] + 20), Path(hit.uri).name[:30], fill=(60, 60, 60), font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, "PNG")  # whatever the name ends with
    return out

"""Contact sheets of search hits, like the Milvus tutorial's: thumbnails in rows of 5, each labelled."""

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from imagesearch.defaults import MAX_IMAGE_PIXELS, MAX_MESSAGE_BYTES
from imagesearch.pictures import UnreadablePicture, fitted

from .files import Unreadable, named_files, read_picture
from .models import Hit
from .output import shown

TILE = (220, 165)
LABEL_HEIGHT = 40
COLUMNS = 5
MARGIN = 8
MISSING = (200, 200, 200)  # the grey of a tile whose picture cannot be read here


def _tile(hit: Hit) -> Image.Image | None:
    """The picture at the hit's URI, fitted to a tile; None when no file there can be read as a picture.

    A URI may name two files (`named_files`): the one holding the very picture ingested (its sha256 is the
    hit's id) is drawn. Only regular files are read (a named pipe would block the grid), and no larger than
    the message that ingested them could have been."""
    found: list[bytes] = []
    for path in named_files(hit.uri):
        try:
            data = read_picture(path, MAX_MESSAGE_BYTES)
        except Unreadable:  # gone, not a regular file, too large
            continue
        if hashlib.sha256(data).hexdigest() == hit.id:
            found = [data]
            break
        found.append(data)
    for data in found:
        try:
            # Decoded as the services decode it: the picture may have changed since it was ingested.
            return ImageOps.pad(fitted(data, TILE, MAX_IMAGE_PIXELS), TILE, color="white")
        except UnreadablePicture:
            continue
    return None


def write_grid(hits: Sequence[Hit], out: str | Path, title: str = "") -> Path:
    """Writes a PNG of the hits; a hit whose file cannot be read here gets a grey tile, and stderr says
    how many did."""
    rows = max(1, -(-len(hits) // COLUMNS))
    header = 34 if title else 0
    width = COLUMNS * (TILE[0] + MARGIN) + MARGIN
    height = header + rows * (TILE[1] + LABEL_HEIGHT + MARGIN) + MARGIN
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    if title:
        draw.text((MARGIN, 8), shown(title), fill="black", font=ImageFont.load_default(size=18))
    missing = 0
    for rank, hit in enumerate(hits, start=1):
        column, row = (rank - 1) % COLUMNS, (rank - 1) // COLUMNS
        x = MARGIN + column * (TILE[0] + MARGIN)
        y = header + MARGIN + row * (TILE[1] + LABEL_HEIGHT + MARGIN)
        tile = _tile(hit)
        if tile is None:
            missing += 1
            tile = Image.new("RGB", TILE, MISSING)
        sheet.paste(tile, (x, y))
        draw.text((x, y + TILE[1] + 3), f"#{rank}  score {hit.score:.3f}", fill="black", font=font)
        # Escaped as in the table: a newline in a file name drew a second line, cut off under the tile.
        draw.text((x, y + TILE[1] + 20), shown(Path(hit.uri).name)[:30], fill=(60, 60, 60), font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, "PNG")  # whatever the name ends with
    if missing:
        print(
            f"{missing} of {len(hits)} pictures cannot be read on this machine (moved, deleted or no longer "
            "a picture): their tiles are grey",
            file=sys.stderr,
        )
    return out

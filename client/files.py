"""Finding the pictures in what the user names: files and folders, judged by content, not by name."""

from collections.abc import Iterable, Iterator
from pathlib import Path

# The first bytes of each format the encoder reads (JPEG, PNG, GIF, WebP, BMP, TIFF).
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
HEAD_BYTES = 12


def looks_like_image(head: bytes) -> bool:
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def walk(paths: Iterable[str | Path], recursive: bool = True) -> Iterator[Path]:
    """Every file under `paths`, folders in sorted order; a missing path raises FileNotFoundError."""
    for path in map(Path, paths):
        if path.is_file():
            yield path
        elif path.is_dir():
            pattern = path.rglob("*") if recursive else path.glob("*")
            yield from sorted(child for child in pattern if child.is_file())
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")


def read_image(image: bytes | str | Path) -> bytes:
    """The bytes of an image given as bytes or as a path."""
    return image if isinstance(image, bytes) else Path(image).read_bytes()

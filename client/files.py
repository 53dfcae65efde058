"""The user's files: finding them under the paths named, and reading one picture without hanging.

Only regular files are read: a named pipe, a device or a socket could block a reader forever or never end,
so each is refused from its file status before a byte is read. Every entry that cannot be ingested is
reported with the reason, never left out in silence.
"""

import dataclasses
import errno
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from imagesearch.iso_media import PICTURE_BRANDS, brands

from .errors import refused
from .models import QueryPart

# The first bytes of each format the encoder reads (JPEG, PNG, GIF, BMP, TIFF; WebP and AVIF below).
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
HEAD_BYTES = 12
_ESCAPED_BYTE = re.compile(rb"\\x([89a-f][0-9a-f])")  # how `uri_of` writes a byte that is not UTF-8
_READ_CHUNK = 1 << 20
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class Unreadable(Exception):
    """A file that cannot be read as a picture; the message says why."""


@dataclass(frozen=True)
class Found:
    """An entry under the paths: a file to read, or one that cannot be ingested, with the reason."""

    path: Path
    failure: str = ""
    named: bool = False  # named itself, not found in a folder: the user says it is a picture


def looks_like_image(head: bytes) -> bool:
    return (
        head.startswith(_SIGNATURES)
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        # AVIF, which the encoder reads, and HEIC (phones' photos), which it does not: both are pictures by
        # their content, so a HEIC is a FAILED item that the encoder names, never a skipped file.
        or any(brand in PICTURE_BRANDS for brand in brands(head))
    )


def uri_of(path: Path) -> str:
    """The absolute path, as stored: a file name's bytes that are not UTF-8 become `\\xNN` (a URI is text)."""
    return os.path.abspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def named_files(uri: str) -> list[str]:
    """The files a stored URI may name: itself, then (if it holds `\\xNN`) the name `uri_of` made that from,
    those bytes put back."""
    raw = _ESCAPED_BYTE.sub(lambda byte: bytes([int(byte[1], 16)]), uri.encode("utf-8"))
    return [uri] if raw == uri.encode("utf-8") else [uri, os.fsdecode(raw)]


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def walk(paths: str | Path | Iterable[str | Path], recursive: bool = True) -> Iterator[Found]:
    """Every entry under `paths` (one path, or several), once however often they name it, folders in sorted
    order; a path that does not exist is refused (ImageSearchError, INVALID_ARGUMENT) before anything is
    found. Links to files are read; links to folders are not followed (no loops) but reported, like every
    entry that cannot be read."""
    named = [Path(path) for path in ([paths] if isinstance(paths, str | Path) else paths)]
    for path in named:
        try:
            os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise refused(f"no such file or folder: {path}") from None
        except OSError:  # there, but not to be looked at (a folder above it is closed): its item says why
            pass
    # isdir is False when it cannot be looked at: then its item says why.
    files = {os.path.abspath(path) for path in named if not os.path.isdir(path)}
    seen: set[str] = set()
    for path in named:
        for found in _walk_folder(path, recursive) if os.path.isdir(path) else [_classify(path)]:
            if (where := os.path.abspath(found.path)) not in seen:
                seen.add(where)
                yield dataclasses.replace(found, named=where in files)


def _walk_folder(folder: Path, recursive: bool) -> Iterator[Found]:
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as error:
        yield Found(folder, failure=f"cannot list this folder: {error.strerror}")
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            if recursive:
                yield from _walk_folder(path, recursive)
        elif entry.is_symlink() and os.path.isdir(path):  # False for a broken link or a loop of links
            yield Found(path, failure="a link to a folder, not followed: name the folder itself to ingest it")
        else:
            yield _classify(path)


def _classify(path: Path) -> Found:
    try:
        mode = path.stat().st_mode
    except OSError as error:
        reason = error.strerror
        if os.path.islink(path):
            reason = "a loop of links" if error.errno == errno.ELOOP else "a broken link"
        return Found(path, failure=f"cannot read: {reason}")
    if stat.S_ISREG(mode):
        return Found(path)
    return Found(path, failure=f"not a regular file ({_kind(mode)})")


def read_picture(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of the regular file at `path`, at most `max_bytes` of them; Unreadable otherwise."""
    try:
        # Non-blocking, so that opening a named pipe cannot wait for a writer; its status refuses it below.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise Unreadable(f"cannot open: {error.strerror}") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise Unreadable(f"not a regular file ({_kind(status.st_mode)})")
        if status.st_size > max_bytes:
            raise Unreadable(f"{status.st_size} bytes is over the limit of {max_bytes} bytes")
        chunks, size = [], 0
        while chunk := os.read(descriptor, _READ_CHUNK):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise Unreadable(f"grew past the limit of {max_bytes} bytes while it was read")
        return b"".join(chunks)
    except OSError as error:
        raise Unreadable(f"cannot read: {error.strerror}") from None
    finally:
        os.close(descriptor)


def picture_bytes(image: bytes | str | Path, max_bytes: int) -> bytes:
    """A picture given as its bytes (a bytearray too) or as the path of a regular file; refused
    (INVALID_ARGUMENT) otherwise."""
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    if not isinstance(image, str | os.PathLike):
        raise refused(f"{image!r} is neither a picture's bytes nor the path of a picture file")
    try:
        return read_picture(image, max_bytes)
    except Unreadable as problem:
        raise refused(f"{image}: {problem}") from None


def part_picture(part: QueryPart, max_bytes: int) -> bytes | None:
    """The bytes of a query part's picture; None for a part without one."""
    return None if part.image is None else picture_bytes(part.image, max_bytes)

"""A Milvus Lite file, checked before Lite opens it. Lite 2.5.1 serves a damaged file without a word: with one
page of it zeroed (a bad sector), a search saw part of the collection, and rows then reported stored were
gone after a restart. Its file is SQLite's, which can tell."""

import contextlib
import os
import sqlite3
from pathlib import Path

import grpc

from imagesearch.errors import ServiceError

_PROBLEMS_SHOWN = 3
# What SQLite says of a file a Lite at work holds, or with a journal Lite rolls back when it opens it:
# SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY (primary codes). Any other failure to read it is damage.
_IN_USE = {5, 6, 8}


def check_lite_file(uri: str) -> None:
    """FAILED_PRECONDITION when Lite could not write beside the file (its lock file, or the file itself);
    DATA_LOSS when the file is damaged. Nothing is written."""
    path = Path(uri).resolve()
    folder = path.parent  # Lite makes it when it is missing
    writable = not folder.exists() or os.access(folder, os.W_OK | os.X_OK)
    if not writable or (path.exists() and not os.access(path, os.R_OK | os.W_OK)):
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"cannot open the Milvus Lite file {uri} (--milvus-uri): Milvus Lite reads and writes it and a "
            f"lock file beside it, in {folder}, which this process may not",
        )
    if not path.is_file() or path.stat().st_size == 0:
        return  # Lite makes it
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as database:
            problems = [row[0] for row in database.execute(f"PRAGMA quick_check({_PROBLEMS_SHOWN})")]
    except sqlite3.DatabaseError as error:  # not a database at all, a damaged header, a sector that fails
        if error.sqlite_errorcode & 0xFF in _IN_USE:  # Lite itself refuses a second opener
            return
        problems = [str(error)]
    if problems != ["ok"]:
        raise ServiceError(
            grpc.StatusCode.DATA_LOSS,
            f"the Milvus Lite file {uri} is damaged ({'; '.join(problems)}): Milvus Lite would serve part of "
            "it and lose what is written to it. Restore it from a backup, or move it aside and ingest again",
        )

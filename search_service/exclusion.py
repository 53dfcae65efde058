"""Rows and their thumbnails change together in one service: ingest batches put their thumbnails in place and
write their rows side by side; a delete batch removes both alone. Otherwise an ingest of a picture between
a delete batch's rows and its thumbnails had its new thumbnail removed: stored without one. (Across
replicas, which share no lock, a thumbnail in place before its row keeps a delete from leaving one of a
picture it deleted.)"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SharedOrAlone:
    """Held by any number at once (`shared`), or by one `alone`; one waiting to be alone goes before any
    shared holder that comes after it, so that a stream of ingest batches cannot keep a delete waiting."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._shared = 0
        self._alone = False
        self._waiting_alone = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._changed:
            while self._alone or self._waiting_alone:
                self._changed.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._changed:
                self._shared -= 1
                self._changed.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        with self._changed:
            self._waiting_alone += 1
            while self._alone or self._shared:
                self._changed.wait()
            self._waiting_alone -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._changed:
                self._alone = False
                self._changed.notify_all()

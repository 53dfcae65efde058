"""One ingestion on the client's side: the files to send, their requests, and the summary of the answers.

Nothing a single file is or does can end the stream: a file that cannot be read, is no regular file, or is
too large for the service is its own FAILED item, decided here before anything is sent. The blocking and
the asyncio clients drive the same `Ingestion`, the latter reading files off the event loop.
"""

import asyncio
import inspect
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from imagesearch.v1 import search_pb2

from . import messages
from .errors import refused
from .files import HEAD_BYTES, Found, Unreadable, looks_like_image, read_picture, uri_of, walk
from .models import IngestItem, IngestSummary, Limits, MetadataValue, Outcome

Progress = Callable[[IngestItem, IngestSummary], None]
# The asyncio client's: a plain callback, or an `async def` one, which it awaits.
AsyncProgress = Callable[[IngestItem, IngestSummary], Awaitable[None] | None]
# Room in a request for what comes beside the image: its uri, metadata and the message's framing.
_ENVELOPE_BYTES = 256 * 1024


def _largest_picture(limits: Limits) -> int:
    return min(limits.max_image_bytes, limits.max_message_bytes - _ENVELOPE_BYTES)


class Ingestion:
    """The files under `paths`, streamed as IngestRequests; `record` takes the service's answers. What can
    be checked without the service (the paths, the metadata) is, when it is made.

    What `progress` raises, or what making the requests raises, ends the stream: nothing more is sent (gRPC
    would replace the latter with "Exception iterating requests!"), what was sent is answered, and then the
    call raises it (`raise_failure`). It also keeps count of the answers the service owes, so that a client
    can tell a service that went silent (`silence_left`) from one that is busy.
    """

    def __init__(
        self,
        paths: str | Path | Iterable[str | Path],
        recursive: bool,
        collection: str,
        metadata: Mapping[str, MetadataValue] | None,
        progress: AsyncProgress | None,
    ) -> None:
        if progress is not None and not callable(progress):  # the first version's took True or False
            raise refused(f"progress = {progress!r} is not a function of (item, summary), nor None")
        self._found = list(walk(paths, recursive))
        self._strings, self._typed = messages.metadata_maps(metadata or {})
        self._collection = collection
        self._progress = progress
        self._lock = threading.Lock()  # the blocking client records answers while another thread sends
        # The blocking client settles unreadable files on gRPC's sending thread and answers on the caller's:
        # `progress` (a progress bar, say) is called by one of them at a time.
        self._progress_turn = threading.Lock()
        self.summary = IngestSummary(total=len(self._found))
        self._failure: Exception | None = None
        self._owed = 0  # requests sent and not answered yet
        self._owed_since = 0.0  # when the service last answered one, or was sent one while it owed none
        self._telling = 0  # progress calls about answers under way: meanwhile the next answers wait unread
        self.went_silent = False  # set by the client that cancelled the stream for it

    def _request(self, found: Found, max_bytes: int) -> search_pb2.IngestRequest | IngestItem:
        """The request for one entry, or its outcome when it is settled here."""
        uri = uri_of(found.path)
        if found.failure:
            return IngestItem(uri, "", "failed", found.failure)
        try:
            image = read_picture(found.path, max_bytes)
        except Unreadable as problem:
            return IngestItem(uri, "", "failed", str(problem))
        if not looks_like_image(image[:HEAD_BYTES]):
            # A file named itself, not found among others in a folder, was said to be a picture.
            outcome: Outcome = "failed" if found.named else "skipped"
            reason = "not a picture (by its content)" if image else "an empty file"
            return IngestItem(uri, "", outcome, reason)
        return messages.ingest_request(self._collection, image, uri, self._strings, self._typed)

    def _sent(self) -> None:
        with self._lock:
            if self._owed == 0:
                self._owed_since = time.monotonic()
            self._owed += 1

    def requests(self, limits: Limits) -> Iterator[search_pb2.IngestRequest]:
        """The requests, each file read as it is sent, so memory stays flat however many there are; a file
        larger than the service takes is a failed item, never sent."""
        max_bytes = _largest_picture(limits)
        try:
            for found in self._found:
                if self._failure is not None:
                    return
                settled = self._request(found, max_bytes)
                if isinstance(settled, IngestItem):
                    self._finish(settled)
                    continue
                self._sent()
                yield settled
        except Exception as failure:
            self._fail(failure)

    async def async_requests(self, limits: Limits) -> AsyncIterator[search_pb2.IngestRequest]:
        """The same, each file read in a worker thread so that the event loop never waits on a disk."""
        max_bytes = _largest_picture(limits)
        try:
            for found in self._found:
                if self._failure is not None:
                    return
                settled = await asyncio.to_thread(self._request, found, max_bytes)
                if isinstance(settled, IngestItem):
                    if (told := self._finish(settled)) is not None:
                        await told
                    continue
                self._sent()
                yield settled
        except Exception as failure:
            self._fail(failure)

    def raise_failure(self) -> None:
        """Raises what ended the requests early, if anything did."""
        if self._failure is not None:
            raise self._failure

    def silence_left(self, timeout: float) -> float:
        """Seconds until the service has owed an answer for `timeout` s without giving any (0: it has);
        `timeout` while it owes none (the client is still reading files, say), and while `progress` runs: a
        slow one held the answers unread, and the service was blamed for the wait."""
        with self._lock:
            if self._owed == 0 or self._telling:
                return timeout
            return max(0.0, self._owed_since + timeout - time.monotonic())

    def record(self, response: search_pb2.IngestResponse) -> Awaitable[None] | None:
        """Takes one answer; what the asyncio client must await (an `async def` progress's call), if any."""
        with self._lock:
            self._owed -= 1
            self._owed_since = time.monotonic()
        outcome = messages.OUTCOMES[response.outcome]
        return self._finish(IngestItem(response.uri, response.id, outcome, response.error), is_answer=True)

    def _finish(self, item: IngestItem, is_answer: bool = False) -> Awaitable[None] | None:
        with self._telling_progress(is_answer), self._progress_turn:
            with self._lock:
                self.summary.add(item)
            if self._progress is None or self._failure is not None:
                return None
            try:
                told = self._progress(item, self.summary)
            except Exception as failure:
                self._fail(failure)
                return None
        return self._awaited(told, is_answer) if inspect.isawaitable(told) else None

    async def _awaited(self, told: Awaitable[None], is_answer: bool) -> None:
        try:
            with self._telling_progress(is_answer):
                await told
        except Exception as failure:
            self._fail(failure)

    @contextmanager
    def _telling_progress(self, is_answer: bool) -> Iterator[None]:
        """For an answer's item, stops the silence clock while `progress` runs or waits for its turn: the
        answers after it wait to be read meanwhile. (An item the client settled itself holds up only the
        sending.)"""
        if not is_answer:
            yield
            return
        started = time.monotonic()
        with self._lock:
            self._telling += 1
        try:
            yield
        finally:
            with self._lock:
                self._telling -= 1
                self._owed_since += time.monotonic() - started

    def _fail(self, failure: Exception) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = failure

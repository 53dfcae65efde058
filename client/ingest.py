"""One ingestion on the client's side: the files to send, their requests, and the summary of the answers.

Nothing a single file is or does can end the stream: a file that cannot be read, is no regular file, or is
too large for the service is its own FAILED item, decided here before anything is sent. The blocking and
the asyncio clients drive the same `Ingestion`, the latter reading files off the event loop.
"""

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path

from imagesearch.v1 import search_pb2

from . import messages
from .files import HEAD_BYTES, Found, Unreadable, looks_like_image, read_picture, uri_of, walk
from .models import IngestItem, IngestSummary, Limits, MetadataValue

Progress = Callable[[IngestItem, IngestSummary], None]
# Room in a request for what comes beside the image: its uri, metadata and the message's framing.
_ENVELOPE_BYTES = 256 * 1024


def _largest_picture(limits: Limits) -> int:
    return min(limits.max_image_bytes, limits.max_message_bytes - _ENVELOPE_BYTES)


class Ingestion:
    """The files under `paths`, streamed as IngestRequests; `record` takes the service's answers. What can
    be checked without the service (the paths, the metadata) is, when it is made."""

    def __init__(
        self,
        paths: str | Path | Iterable[str | Path],
        recursive: bool,
        collection: str,
        metadata: Mapping[str, MetadataValue] | None,
        progress: Progress | None,
    ) -> None:
        self._found = list(walk(paths, recursive))
        self._strings, self._typed = messages.metadata_maps(metadata or {})
        self._collection = collection
        self._progress = progress
        self._lock = threading.Lock()  # the blocking client records answers while another thread sends
        self.summary = IngestSummary(total=len(self._found))
        # What making the requests raised (`progress`, say): gRPC would replace it with "Exception iterating
        # requests!". It ends the stream instead; what was sent is answered, and then the call raises it.
        self._failure: Exception | None = None

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
            return IngestItem(uri, "", "skipped", "not a picture (by its content)")
        return messages.ingest_request(self._collection, image, uri, self._strings, self._typed)

    def _send(self, settled: search_pb2.IngestRequest | IngestItem) -> search_pb2.IngestRequest | None:
        if isinstance(settled, IngestItem):
            self._finish(settled)
            return None
        return settled

    def requests(self, limits: Limits) -> Iterator[search_pb2.IngestRequest]:
        """The requests, each file read as it is sent, so memory stays flat however many there are; a file
        larger than the service takes is a failed item, never sent."""
        max_bytes = _largest_picture(limits)
        try:
            for found in self._found:
                if (request := self._send(self._request(found, max_bytes))) is not None:
                    yield request
        except Exception as failure:
            self._failure = failure

    async def async_requests(self, limits: Limits) -> AsyncIterator[search_pb2.IngestRequest]:
        """The same, each file read in a worker thread so that the event loop never waits on a disk."""
        max_bytes = _largest_picture(limits)
        try:
            for found in self._found:
                settled = await asyncio.to_thread(self._request, found, max_bytes)
                if (request := self._send(settled)) is not None:
                    yield request
        except Exception as failure:
            self._failure = failure

    def raise_failure(self) -> None:
        """Raises what ended the requests early, if anything did."""
        if self._failure is not None:
            raise self._failure

    def record(self, response: search_pb2.IngestResponse) -> None:
        outcome = messages.OUTCOMES[response.outcome]
        self._finish(IngestItem(response.uri, response.id, outcome, response.error))

    def _finish(self, item: IngestItem) -> None:
        with self._lock:
            self.summary.add(item)
        if self._progress is not None:
            self._progress(item, self.summary)

"""The ingestion pipeline: hash -> skip what is stored -> encode the rest -> write, in order, with totals.

Items are hashed by the thread that reads the stream, as they arrive, and grouped into batches of what has
already arrived (at most what one encoder call takes), so a fast client fills batches and a slow one still
sees each result promptly. Several batches are checked against Milvus, encoded and written at once, so that
neither the encoder nor Milvus waits for the other. A result says "stored" only after Milvus has accepted the
row, which holds the vector and every field at once.
"""

import contextvars
import hashlib
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import Counter

from imagesearch.defaults import MAX_METADATA_BYTES, metadata_bytes
from imagesearch.errors import ServiceError
from imagesearch.v1 import search_pb2

from .encoder_replicas import EncoderReplicas, RejectedImage
from .exclusion import SharedOrAlone
from .metadata import BadMetadata, stored_metadata
from .store import MAX_URI_LENGTH, CollectionInfo, Store
from .thumbnails import Thumbnails

STORED, PRESENT, FAILED = search_pb2.OUTCOME_STORED, search_pb2.OUTCOME_PRESENT, search_pb2.OUTCOME_FAILED


@dataclass
class _Item:
    index: int
    uri: str
    image: bytes
    text_metadata: dict[str, str]
    typed_metadata: dict[str, search_pb2.FilterValue]
    collection: str  # the stream's collection is its first request's
    metadata: dict[str, Any] = field(default_factory=dict)  # as stored, once checked
    id: str = ""
    outcome: int = search_pb2.OUTCOME_UNSPECIFIED
    error: str = ""
    # Set when the same picture came earlier in this stream and is still in hand: the result is that item's.
    same_as: "_Item | None" = None


@dataclass
class _Totals:
    received: int = 0
    counts: dict[int, int] = field(default_factory=lambda: {STORED: 0, PRESENT: 0, FAILED: 0})

    def message(self) -> search_pb2.IngestTotals:
        return search_pb2.IngestTotals(
            received=self.received,
            stored=self.counts[STORED],
            present=self.counts[PRESENT],
            failed=self.counts[FAILED],
        )


_END = object()  # the client closed its side of the stream
_BATCH_DONE = object()  # a batch finished: wake the loop to send its results


def _problem(item: _Item) -> str:
    """Why the item cannot be stored whatever the encoder says, or "" (then its metadata is as stored)."""
    if not item.image:
        return "empty image (0 bytes)"
    if len(item.uri) > MAX_URI_LENGTH:
        return f"uri is {len(item.uri)} characters, over the limit of {MAX_URI_LENGTH}"
    try:
        item.metadata = stored_metadata(item.text_metadata, item.typed_metadata)
    except BadMetadata as problem:
        return str(problem)
    if metadata_bytes(item.metadata) > MAX_METADATA_BYTES:
        return f"metadata is over the limit of {MAX_METADATA_BYTES} bytes as JSON"
    return ""


def _fill_in_id(item: _Item) -> None:
    """Fills in the item's id (the sha256 of its bytes), or its failure when it cannot be stored whatever the
    encoder says."""
    if problem := _problem(item):
        item.outcome, item.error = FAILED, problem
    else:
        item.id = hashlib.sha256(item.image).hexdigest()


def _raise_if_failure(message: object) -> None:
    """Ends the call if `message` is the reading's failure: a request refused as it was read, with its status;
    a broken stream, with CANCELLED; a failure of the reading itself raised as it is, for the call's handler
    to report."""
    if isinstance(message, ServiceError):
        raise message
    if isinstance(message, grpc.RpcError):
        raise ServiceError(
            grpc.StatusCode.CANCELLED, "the ingest stream broke: the caller cancelled it or went away"
        )
    if isinstance(message, BaseException):
        raise message


def take_arrived(inbox: "queue.Queue[object]", first: object, size: int) -> tuple[list[_Item], bool]:
    """`first` and the items already waiting in `inbox` after it, up to `size` items; and whether the stream
    has ended. A failure among them ends the call (`_raise_if_failure`)."""
    batch: list[_Item] = []
    message = first
    while True:
        if message is _END:
            return batch, True
        _raise_if_failure(message)
        if isinstance(message, _Item):
            batch.append(message)
        if len(batch) >= size:
            return batch, False
        try:
            message = inbox.get_nowait()
        except queue.Empty:
            return batch, False


class Ingestion:
    """One Ingest stream."""

    def __init__(
        self,
        store: Store,
        encoder: EncoderReplicas,
        default_collection: str,
        in_flight: int,
        outcomes: Counter,
        thumbnails: Thumbnails,
        changes: SharedOrAlone,
        idle_timeout_s: float,
        buffer_bytes: int,
    ) -> None:
        self.outcomes = outcomes  # a metric, by outcome name
        self.thumbnails = thumbnails
        self.changes = changes  # held while a batch places its thumbnails and writes its rows
        self.store = store
        self.encoder = encoder
        self.default_collection = default_collection
        self.in_flight = in_flight
        self.idle_timeout_s = idle_timeout_s
        self.buffer_bytes = buffer_bytes
        self._buffered = 0  # bytes of the pictures read and not yet answered
        self._bytes_freed = threading.Condition()
        self._inbox: queue.Queue[object] = queue.Queue()
        self._room = threading.Semaphore(0)
        self._finished = threading.Event()
        self._seen: dict[str, _Item] = {}
        self._totals = _Totals()
        self.items_per_call = 1
        self.max_image_bytes = 0  # the encoder's, once asked

    def run(self, requests: Iterator[search_pb2.IngestRequest]) -> Iterator[search_pb2.IngestResponse]:
        try:
            yield from self._run(requests)
        finally:
            self._finished.set()  # lets the reader go, however the call ended

    def _run(self, requests: Iterator[search_pb2.IngestRequest]) -> Iterator[search_pb2.IngestResponse]:
        info = self.encoder.info()
        self.items_per_call = max(1, info.max_items_per_request)
        self.max_image_bytes = info.max_image_bytes
        self._room.release(self.items_per_call * (self.in_flight + 1))
        threading.Thread(target=self._read, args=(requests,), name="ingest-reader", daemon=True).start()
        first = self._next(idle=True)
        if first is _END:
            return
        _raise_if_failure(first)
        assert isinstance(first, _Item)
        collection = self.store.create(
            first.collection or self.default_collection, info.model, info.dimension
        )
        collection.require_model(info.model)
        pending: deque[tuple[list[_Item], Future[None]]] = deque()
        with ThreadPoolExecutor(self.in_flight, thread_name_prefix="ingest") as workers:
            batch, ended = self._take_batch(first)
            while True:
                if batch:
                    fresh = self._first_sightings(batch, collection.name)
                    # A copy of this call's context carries its request id into the worker thread.
                    context = contextvars.copy_context()
                    future = workers.submit(context.run, self._encode_and_store, fresh, collection)
                    future.add_done_callback(lambda _: self._inbox.put(_BATCH_DONE))
                    pending.append((batch, future))
                while pending and (pending[0][1].done() or len(pending) >= self.in_flight or ended):
                    done, future = pending.popleft()
                    future.result()  # an unreachable encoder or Milvus ends the stream here
                    self._free(done)
                    yield from self._results(done)
                if ended and not pending:
                    return
                next_item = self._next(idle=not pending)
                batch, ended = self._take_batch(next_item) if next_item is not _BATCH_DONE else ([], False)

    def _next(self, idle: bool) -> object:
        """The inbox's next message. A stream `idle` (none of its pictures under way) that sends nothing for
        the idle time limit ends, so that a client gone quiet does not hold its slot for good."""
        try:
            return self._inbox.get(timeout=self.idle_timeout_s if idle else None)
        except queue.Empty:
            raise ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no picture came for {self.idle_timeout_s:g} s (--ingest-idle-timeout-s), so the stream was "
                "ended to free its slot: what it answered is done; send the rest in a new stream",
            ) from None

    def _read(self, requests: Iterator[search_pb2.IngestRequest]) -> None:
        """Reads the stream, hashing each picture as it arrives (hashlib lets other threads run meanwhile)."""
        taken = 0
        try:
            for request in requests:
                while not self._room.acquire(timeout=1.0):
                    if self._finished.is_set():
                        return
                image = request.image  # protobuf copies the bytes at each access
                if not self._hold(len(image)):
                    return
                item = _Item(
                    taken,
                    request.uri,
                    image,
                    dict(request.metadata),
                    dict(request.typed_metadata),
                    request.collection,
                )
                _fill_in_id(item)
                self._inbox.put(item)
                taken += 1
            self._inbox.put(_END)
        except ServiceError as refusal:  # a request that cannot be read
            self._inbox.put(ServiceError(refusal.code, f"requests[{taken}]: {refusal.message}"))
        # The caller gone (grpc.RpcError), or a defect: the loop ends the call.
        except Exception as error:
            self._inbox.put(error)

    def _hold(self, size: int) -> bool:
        """Waits until `size` more bytes fit in the stream's buffer (or it holds none), and counts them; False
        once the stream has ended. The client waits meanwhile: gRPC's flow control holds its sending."""
        with self._bytes_freed:
            while self._buffered and self._buffered + size > self.buffer_bytes:
                if self._finished.is_set():
                    return False
                self._bytes_freed.wait(timeout=1.0)
            self._buffered += size
            return True

    def _free(self, answered: list[_Item]) -> None:
        with self._bytes_freed:
            self._buffered -= sum(len(item.image) for item in answered)
            self._bytes_freed.notify()

    def _take_batch(self, first: object) -> tuple[list[_Item], bool]:
        batch, ended = take_arrived(self._inbox, first, self.items_per_call)
        for _ in batch:
            self._room.release()
        self._totals.received += len(batch)
        return batch, ended

    def _first_sightings(self, batch: list[_Item], collection: str) -> list[_Item]:
        """Settles the items that failed, those that name another collection than the stream's, and the
        repeats of items this stream still has in hand; returns the rest."""
        fresh: list[_Item] = []
        for item in batch:
            if item.outcome != FAILED and item.collection not in ("", collection):
                item.outcome = FAILED
                item.error = (
                    f"collection {item.collection!r} is not this stream's {collection!r} (its first "
                    "request's): one stream ingests into one collection"
                )
            if item.outcome == FAILED:
                continue
            if item.id in self._seen:
                item.same_as = self._seen[item.id]
            else:
                self._seen[item.id] = item
                fresh.append(item)
        return fresh

    def _encode_and_store(self, items: list[_Item], collection: CollectionInfo) -> None:
        """Skips the pictures Milvus already holds, encodes the others and writes them with their thumbnails;
        each gets its outcome."""
        stored = self.store.existing_ids(collection.name, [item.id for item in items])
        for item in items:
            if item.id in stored:
                item.outcome = PRESENT
            elif 0 < self.max_image_bytes < len(item.image):  # 0: an encoder that does not say
                # Refused here as the encoder would refuse it: sent, it could take its batch's call past the
                # encoder's message limit, which fails every picture of the call.
                item.outcome = FAILED
                item.error = f"{len(item.image)} bytes is over the limit of {self.max_image_bytes} bytes"
        new = [item for item in items if item.id not in stored and item.outcome != FAILED]
        # A stored picture without its thumbnail (the disk was full then, or it predates thumbnails) gets one
        # when it is ingested again, if a delete has not removed it meanwhile.
        unmade = self.thumbnails.lacking(collection.name, stored)
        wanted = [(item.id, item.image) for item in new] + [
            (item.id, item.image) for item in items if item.id in unmade
        ]
        with self.thumbnails.making(collection.name, wanted) as thumbnails:
            rows = self._encoded_rows(new, collection) if new else []
            thumbnails.wait()  # made while the pictures were encoded
            # No delete batch of this service comes between these thumbnails and their rows (it would remove a
            # thumbnail just placed for a row then written). The thumbnails go in place first: a delete on
            # another replica, which this hold does not hold back, finds a row only with its thumbnail.
            with self.changes.shared():
                encoded = {item.id for item, _ in rows}
                thumbnails.place(encoded | unmade)
                try:
                    present = self._write(collection.name, rows)  # another stream may have stored some
                except Exception:
                    self.thumbnails.remove(collection.name, encoded)
                    raise
                for item, _ in rows:
                    if item.outcome != FAILED:
                        item.outcome = PRESENT if item.id in present else STORED
                rowless = {item.id for item, _ in rows if item.outcome == FAILED}
                if unmade:  # a delete may have removed some since they were looked up
                    rowless |= unmade - self.store.existing_ids(collection.name, list(unmade))
                self.thumbnails.remove(collection.name, rowless)

    def _encoded_rows(
        self, items: list[_Item], collection: CollectionInfo
    ) -> list[tuple[_Item, dict[str, Any]]]:
        """The rows of the pictures the encoder encodes; those it does not, FAILED with its reason."""
        model, results = self.encoder.encode_images([item.image for item in items])
        collection.require_model(model)  # replicas could serve different models
        now = int(time.time())
        rows: list[tuple[_Item, dict[str, Any]]] = []
        for item, result in zip(items, results, strict=True):
            if isinstance(result, RejectedImage):
                item.outcome, item.error = FAILED, result.reason
            else:
                row = {
                    "id": item.id,
                    "vector": result.tolist(),
                    "uri": item.uri,
                    "model": model,
                    "metadata": item.metadata,
                    "ingested_at": now,
                }
                rows.append((item, row))
        return rows

    def _write(self, collection: str, rows: list[tuple[_Item, dict[str, Any]]]) -> set[str]:
        """Writes the rows whose id is not stored yet; returns the ids that were. A batch that Milvus refuses
        as malformed is written again row by row, so that only the items whose rows it refuses fail."""
        try:
            return self.store.store_new(collection, [row for _, row in rows])
        except ServiceError as refusal:
            if refusal.code != grpc.StatusCode.INVALID_ARGUMENT:
                raise  # Milvus unreachable or failing: no row of the stream can be stored now
        present: set[str] = set()
        for item, row in rows:
            try:
                present |= self.store.store_new(collection, [row])
            except ServiceError as refusal:
                if refusal.code != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                item.outcome, item.error = FAILED, refusal.message
        return present

    def _results(self, batch: list[_Item]) -> Iterator[search_pb2.IngestResponse]:
        for item in batch:
            if item.same_as is not None:
                original = item.same_as
                item.outcome = FAILED if original.outcome == FAILED else PRESENT
                item.error = original.error
            elif self._seen.get(item.id) is item:
                # Settled: a later copy finds it in Milvus, or fails in the encoder as it did. Forgetting it
                # keeps a stream's memory flat however many pictures it carries (0.5 KiB each, bench/load.py).
                del self._seen[item.id]
            self._totals.counts[item.outcome] += 1
            self.outcomes.labels(search_pb2.Outcome.Name(item.outcome).removeprefix("OUTCOME_").lower()).inc()
            item.image = b""  # the bytes are no longer needed; keep memory flat on long streams
            yield search_pb2.IngestResponse(
                index=item.index,
                uri=item.uri,
                id=item.id,
                outcome=item.outcome,
                error=item.error,
                totals=self._totals.message(),
            )

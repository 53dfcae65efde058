"""Dynamic batching: items of concurrent requests are queued and run together in one forward pass.

Batches form from what arrives while the model is busy: when a pass ends, the next one takes everything
queued, up to `max_batch_size`. Waiting for more pays off only when more is known to be coming, so a batch
waits (no item longer than `max_delay_s` once the model is free for it) only for requests on their way: those
announced with `expect()` and still being prepared (tokenised, decoded), and as many requests as the last
pass answered, since callers that wait for their answer send again as soon as they have it (without this, two
groups of callers settle into taking turns with half-full passes). A lone caller is its own returning caller,
so it never waits. The queue is bounded, and a request announced with `expect(items)` holds room for its
items while it is prepared: one that does not fit is refused at once (QueueFull), before its pictures are
decoded, instead of after (12 calls of 32 photos on a full queue were refused 3-11 s late, their decoding
thrown away) or behind an unbounded backlog.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Output = TypeVar("Output")


class QueueFull(Exception):
    pass


class BatcherClosed(Exception):
    pass


@dataclass
class _Request(Generic[Output]):
    future: Future[list[Output]]
    outputs: list[Output | None]
    pending: int


@dataclass
class _Slot(Generic[Item, Output]):
    item: Item
    request: _Request[Output]
    position: int
    enqueued_at: float = field(default_factory=time.monotonic)


class Arrival(Generic[Item, Output]):
    """A request on its way to a batcher, with room held for its items: batches wait for it until it submits
    (at most that many items), or leaves the `with` block."""

    def __init__(self, batcher: "DynamicBatcher[Item, Output]", room: int) -> None:
        self._batcher = batcher
        self._room = room
        self._expected = True

    def submit(self, items: Sequence[Item]) -> Future[list[Output]]:
        self._expected = False
        return self._batcher._submit(items, announced_with=self._room)

    def __enter__(self) -> "Arrival[Item, Output]":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._expected:
            self._expected = False
            self._batcher._withdraw(self._room)


class DynamicBatcher(Generic[Item, Output]):
    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[Item]], Sequence[Output]],
        max_batch_size: int,
        max_delay_s: float,
        max_queue_size: int,
        on_batch: Callable[[int, float], None] = lambda size, seconds: None,
    ) -> None:
        self.name = name
        self.on_batch = on_batch  # (items, seconds) of every forward pass
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue_size = max_queue_size
        self.forward_passes = 0
        self.items_processed = 0
        self.items_running = 0  # in the forward pass under way
        self._run_batch = run_batch
        self._queue: deque[_Slot[Item, Output]] = deque()
        self._expected = 0  # requests announced by expect() and not yet submitted
        self._held = 0  # queue room those requests hold
        self._last_answered = 0  # requests the last forward pass completed
        self._last_ended = -float("inf")
        self._arrived_since = 0  # requests submitted since then
        self._changed = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    def expect(self, items: int) -> Arrival[Item, Output]:
        """Announces a request of at most `items` that will submit once prepared, holding room for them (or
        QueueFull now); use as `with batcher.expect(items) as arrival:`."""
        with self._changed:
            self._check_room(items)
            self._expected += 1
            self._held += items
        return Arrival(self, items)

    def submit(self, items: Sequence[Item]) -> Future[list[Output]]:
        """Queues `items`; the future gives their outputs in order."""
        return self._submit(items, announced_with=None)

    def _withdraw(self, room: int) -> None:
        with self._changed:
            self._expected -= 1
            self._held -= room
            self._changed.notify()

    def _check_room(self, items: int) -> None:
        if self._closed:
            raise BatcherClosed(f"the {self.name} batcher is shutting down")
        taken = len(self._queue) + self._held  # the items being prepared count: their room is held
        if taken + items > self.max_queue_size:
            raise QueueFull(
                f"the {self.name} queue holds {taken} of {self.max_queue_size} items; {items} more do not fit"
            )

    def _submit(self, items: Sequence[Item], announced_with: int | None) -> Future[list[Output]]:
        """Queues `items`; a request announced by expect() gives back the room it held first."""
        request: _Request[Output] = _Request(Future(), [None] * len(items), len(items))
        with self._changed:
            if announced_with is not None:
                self._expected -= 1
                self._held -= announced_with
                self._changed.notify()  # a batch may have been waiting for this request alone
            if not items:
                request.future.set_result([])
                return request.future
            self._check_room(len(items))
            self._queue.extend(_Slot(item, request, position) for position, item in enumerate(items))
            self._arrived_since += 1
            self._changed.notify()
        return request.future

    def queue_depth(self) -> int:
        """Items queued, and those of requests still being prepared (their room is held): what a full queue
        counts when it refuses a request."""
        with self._changed:
            return len(self._queue) + self._held

    def close(self) -> None:
        """Runs what is queued, then stops the worker."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._worker.join()

    def _next_batch(self) -> list[_Slot[Item, Output]] | None:
        with self._changed:
            while not self._queue and not self._closed:
                self._changed.wait()
            if not self._queue:
                return None
            # No item waits longer than the delay once the model is free for it.
            deadline = max(self._queue[0].enqueued_at, self._last_ended) + self.max_delay_s
            while (
                len(self._queue) < self.max_batch_size
                and (self._expected > 0 or self._arrived_since < self._last_answered)
                and not self._closed
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            self.items_running = min(self.max_batch_size, len(self._queue))
            return [self._queue.popleft() for _ in range(self.items_running)]

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            started = time.perf_counter()
            try:
                outputs = self._run_batch([slot.item for slot in batch])
            except Exception as error:
                self._ended(answered=0)
                log.exception("%s forward pass of %d items failed", self.name, len(batch))
                for slot in batch:
                    if not slot.request.future.done():
                        slot.request.future.set_exception(error)
                continue
            self.on_batch(len(batch), time.perf_counter() - started)
            self.forward_passes += 1
            self.items_processed += len(batch)
            for slot, output in zip(batch, outputs, strict=True):
                slot.request.outputs[slot.position] = output
                slot.request.pending -= 1
            answered = {id(slot.request): slot.request for slot in batch if slot.request.pending == 0}
            self._ended(len(answered))  # before the answers go out: their callers may send again at once
            for request in answered.values():
                if not request.future.done():
                    request.future.set_result(request.outputs)  # type: ignore[arg-type]

    def _ended(self, answered: int) -> None:
        with self._changed:
            self.items_running = 0
            self._last_answered, self._last_ended, self._arrived_since = answered, time.monotonic(), 0

"""Dynamic batching: items of concurrent requests are queued and run together in one forward pass.

Like Triton's dynamic batcher: a batch is run as soon as it holds `max_batch_size` items, or when its oldest
item has waited `max_delay_s`, so a lone request is delayed by at most that. The queue is bounded; a request
that does not fit is refused at once (QueueFull) instead of waiting behind an unbounded backlog.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
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
        self._run_batch = run_batch
        self._queue: deque[_Slot[Item, Output]] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    def submit(self, items: Sequence[Item]) -> Future[list[Output]]:
        """Queues `items`; the future gives their outputs in order."""
        request: _Request[Output] = _Request(Future(), [None] * len(items), len(items))
        if not items:
            request.future.set_result([])
            return request.future
        with self._changed:
            if self._closed:
                raise BatcherClosed(f"the {self.name} batcher is shutting down")
            if len(self._queue) + len(items) > self.max_queue_size:
                raise QueueFull(
                    f"the {self.name} queue holds {len(self._queue)} of {self.max_queue_size} items; "
                    f"{len(items)} more do not fit"
                )
            self._queue.extend(_Slot(item, request, position) for position, item in enumerate(items))
            self._changed.notify()
        return request.future

    def queue_depth(self) -> int:
        with self._changed:
            return len(self._queue)

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
            deadline = self._queue[0].enqueued_at + self.max_delay_s
            while len(self._queue) < self.max_batch_size and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            size = min(self.max_batch_size, len(self._queue))
            return [self._queue.popleft() for _ in range(size)]

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            started = time.perf_counter()
            try:
                outputs = self._run_batch([slot.item for slot in batch])
            except Exception as error:
                log.exception("%s forward pass of %d items failed", self.name, len(batch))
                for slot in batch:
                    if not slot.request.future.done():
                        slot.request.future.set_exception(error)
                continue
            self.on_batch(len(batch), time.perf_counter() - started)
            self.forward_passes += 1
            self.items_processed += len(batch)
            for slot, output in zip(batch, outputs, strict=True):
                request = slot.request
                request.outputs[slot.position] = output
                request.pending -= 1
                if request.pending == 0 and not request.future.done():
                    request.future.set_result(request.outputs)  # type: ignore[arg-type]

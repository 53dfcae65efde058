"""Worker processes for the encoder's host work: decoding images with PIL and tokenising long requests.

Threads would share one interpreter lock, and PIL's and the tokenizer's Python work would serialise on it;
processes do not. They are started with `spawn` (forking a process that already runs torch or gRPC threads
can hang), import nothing heavier than PIL, numpy and the tokenizer, and hand pixels back as CLIP's final
uint8 picture (150 KB for 224x224) read straight into an array. A worker that dies is replaced and its task
retried once, so other requests never see it; a task that kills two workers in a row fails alone, and so
does one that takes a worker past its time limit (the worker is stopped and replaced: a decoder that hangs
holds no worker for good). The pictures of a call that ended (its caller gone, its deadline passed) are
dropped from the queue.
"""

import logging
import math
import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from .images import ImageLimits, RejectedImage, pixels_for_clip
from .tokens import TokenizedTexts, tokenize

log = logging.getLogger(__name__)

_READY = "ready"
_DECODE, _TOKENIZE = "decode", "tokenize"
# Fewer texts than this are not worth a trip to another process: a lone query is tokenised where it arrives.
MIN_TEXTS_PER_TASK = 8
# Registers what to run once the caller's call has ended, however it ended (grpc's context.add_callback);
# False when the call has ended already.
WhenCallEnds = Callable[[Callable[[], None]], object]
_START_S = 120.0  # longest a worker process may take to start (imports included) before it counts as dead


class WorkerDied(RuntimeError):
    pass


def _serve(connection: Connection, limits: ImageLimits, resolution: int, context_length: int) -> None:
    """A worker process's life: answer tasks until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent decides
    connection.send(_READY)
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return
        kind, payload = task
        if kind == _DECODE:
            outcome = pixels_for_clip(payload, limits, resolution)
            if isinstance(outcome, RejectedImage):
                connection.send(outcome)
            else:
                connection.send(None)  # the pixels follow as raw bytes
                connection.send_bytes(outcome.reshape(-1))  # flat: a pipe counts items of the first axis
        else:
            connection.send(tokenize(payload, context_length))


class _Worker:
    """One process and the pipe to it; a task that takes it over `time_limit_s` gets WorkerDied."""

    def __init__(
        self,
        start: Callable[[], tuple[multiprocessing.process.BaseProcess, Connection]],
        time_limit_s: float,
    ) -> None:
        self._start = start
        self.time_limit_s = time_limit_s
        self.process, self.connection = start()

    def wait_ready(self) -> None:
        if not self.connection.poll(_START_S) or self.connection.recv() != _READY:
            raise WorkerDied(f"worker process {self.process.pid} did not start within {_START_S:g} s")

    def call(self, task: tuple[str, Any], receive: Callable[[Connection], Any]) -> Any:
        for attempt in (1, 2):
            try:
                self.connection.send(task)
                if not self.connection.poll(self.time_limit_s):  # an answer, or the end of a dead worker
                    log.warning(
                        "worker process %d took over %g s on one task; replacing it",
                        self.process.pid,
                        self.time_limit_s,
                    )
                    self._replace()
                    raise WorkerDied(f"it took over {self.time_limit_s:g} s (its worker process was stopped)")
                return receive(self.connection)
            except (EOFError, OSError):
                log.warning("worker process %d died (attempt %d); replacing it", self.process.pid, attempt)
                self._replace()
        raise WorkerDied("the worker process died twice on this item")

    def _replace(self) -> None:
        """A new process in place of the dead one; WorkerDied if that one dies too before it is ready (the
        next task replaces it again)."""
        self.connection.close()
        self.process.kill()
        self.process.join()
        self.process, self.connection = self._start()
        try:
            self.wait_ready()
        except (EOFError, OSError):
            raise WorkerDied("a new worker process died as it started") from None

    def close(self) -> None:
        self.connection.close()  # the worker reads EOF and returns
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class WorkerPool:
    """`count` worker processes, each fed by its own thread from one queue of tasks."""

    def __init__(
        self, count: int, limits: ImageLimits, resolution: int, context_length: int, time_limit_s: float
    ) -> None:
        self.resolution = resolution
        self.context_length = context_length
        context = multiprocessing.get_context("spawn")

        def start() -> tuple[multiprocessing.process.BaseProcess, Connection]:
            parent, child = context.Pipe()
            process = context.Process(
                target=_serve, args=(child, limits, resolution, context_length), name="encoder-worker"
            )
            process.daemon = True
            process.start()
            child.close()
            return process, parent

        self._workers = [_Worker(start, time_limit_s) for _ in range(count)]
        for worker in self._workers:
            worker.wait_ready()
        self._tasks: queue.SimpleQueue[tuple[tuple[str, Any], Callable, Future] | None] = queue.SimpleQueue()
        self._closing = threading.Lock()  # no task is queued behind the feeders' stop
        self._closed = False
        self._threads = [
            threading.Thread(target=self._feed, args=(worker,), name=f"worker-feed-{index}", daemon=True)
            for index, worker in enumerate(self._workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def size(self) -> int:
        return len(self._workers)

    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers if worker.process.pid is not None]

    def _feed(self, worker: _Worker) -> None:
        while (entry := self._tasks.get()) is not None:
            task, receive, future = entry
            if not future.set_running_or_notify_cancel():
                continue  # its call has ended
            try:
                future.set_result(worker.call(task, receive))
            except Exception as error:
                future.set_exception(error)

    def _submit(self, task: tuple[str, Any], receive: Callable[[Connection], Any]) -> Future:
        future: Future = Future()
        with self._closing:
            if self._closed:  # no feeder would ever take it
                future.set_exception(WorkerDied("the worker processes are stopping"))
            else:
                self._tasks.put((task, receive, future))
        return future

    def _receive_pixels(self, connection: Connection) -> np.ndarray | RejectedImage:
        outcome = connection.recv()
        if outcome is not None:
            return outcome
        pixels = np.empty((self.resolution, self.resolution, 3), dtype=np.uint8)
        if connection.recv_bytes_into(pixels.reshape(-1)) != pixels.nbytes:
            raise RuntimeError("a worker sent a picture of the wrong size")
        return pixels

    def decode(
        self, images: Sequence[bytes], when_call_ends: WhenCallEnds | None = None
    ) -> list[np.ndarray | RejectedImage]:
        """For each image in order: CLIP's (resolution, resolution, 3) uint8 input pixels, or why not. Those
        not yet decoding when the call ends are left undecoded: its caller will not read them."""
        futures = [self._submit((_DECODE, data), self._receive_pixels) for data in images]

        def drop() -> None:
            for future in futures:
                future.cancel()

        if when_call_ends is not None and when_call_ends(drop) is False:
            drop()  # the call ended before it could say so
        outcomes: list[np.ndarray | RejectedImage] = []
        for future in futures:
            try:
                outcomes.append(future.result())
            except WorkerDied as error:
                outcomes.append(RejectedImage(f"decoding failed: {error}"))
            except CancelledError:
                outcomes.append(RejectedImage("not decoded: the call ended first"))
        return outcomes

    def tokenize(self, texts: list[str]) -> TokenizedTexts:
        """CLIP's tokens for `texts`: in parallel in chunks of at least MIN_TEXTS_PER_TASK, or here when there
        are too few for two chunks."""
        if len(texts) < 2 * MIN_TEXTS_PER_TASK:
            return tokenize(texts, self.context_length)
        chunk = max(MIN_TEXTS_PER_TASK, math.ceil(len(texts) / self.size))
        futures = [
            self._submit((_TOKENIZE, texts[start : start + chunk]), Connection.recv)
            for start in range(0, len(texts), chunk)
        ]
        parts = [future.result() for future in futures]
        return TokenizedTexts(
            np.concatenate([part.tokens for part in parts]),
            [cut for part in parts for cut in part.truncated],
            [empty for part in parts for empty in part.wordless],
        )

    def close(self) -> None:
        with self._closing:
            self._closed = True
            for _ in self._threads:
                self._tasks.put(None)
        for thread in self._threads:
            thread.join()
        for worker in self._workers:
            worker.close()

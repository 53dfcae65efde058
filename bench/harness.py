"""What the benchmarks share: services as real subprocesses, latency percentiles, and a printed table."""

import glob
import io
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
from PIL import Image

_LAST_LINES = 50  # of a service's log, told when it fails to start
_ECHOED_LINES = 20  # of its warnings and errors: a queue that is full under load may warn at every retry


def _said(line: str) -> bool:
    """Whether a service's log line is worth the reader's eye: a warning, an error, or what is not a log
    record (a traceback, gRPC's own lines). The services log a JSON line for every call, which is not."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return True
    return not isinstance(record, dict) or record.get("level") not in ("DEBUG", "INFO")


class _ServiceLog:
    """A service's log, read to its end (a full pipe would block the service): the address in its ready
    line, the first warnings and errors echoed to stderr, and the last lines kept for a start that fails."""

    def __init__(self, module: str, ready_line: str) -> None:
        self.module, self.ready_line = module, ready_line
        self.address: queue.Queue[str | None] = queue.Queue()  # None: the log ended before the ready line
        self.last: deque[str] = deque(maxlen=_LAST_LINES)
        self.echoed = self.left_out = 0

    def follow(self, lines: Iterable[str]) -> None:
        waiting = True
        for line in lines:
            self.last.append(line)
            if _said(line):
                self._echo(line)
            if waiting and self.ready_line in line:
                self.address.put(json.loads(line)["message"].split(" on ", 1)[1].split()[0])
                waiting = False
        self.address.put(None)

    def _echo(self, line: str) -> None:
        if self.echoed < _ECHOED_LINES:
            print(f"[{self.module}] {line}", end="", file=sys.stderr)
            self.echoed += 1
        else:
            self.left_out += 1

    def failed_start(self, why: str) -> RuntimeError:
        print(f"[{self.module}] its last lines:\n{''.join(self.last)}", end="", file=sys.stderr)
        return RuntimeError(f"{self.module} {why} (its last lines are on stderr)")


@contextmanager
def service(
    module: str, args: Sequence[str], ready_line: str, ready_within_s: float = 300
) -> Iterator[tuple[str, int]]:
    """`python -m module args...` until the block ends; yields the address from its `ready_line` log line
    and the process id. Its first warnings and errors go to stderr as they come; a start that fails or takes
    over `ready_within_s` raises, its last log lines on stderr."""
    command = [sys.executable, "-m", module, *args, "--metrics-port", "-1"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    log = _ServiceLog(module, ready_line)
    reader = threading.Thread(target=log.follow, args=(process.stderr,), daemon=True)
    reader.start()
    try:
        try:
            address = log.address.get(timeout=ready_within_s)
        except queue.Empty:
            raise log.failed_start(f"was not ready within {ready_within_s:g} s") from None
        if address is None:
            raise log.failed_start(f"exited with {process.wait()} before it was ready")
        yield address, process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)
        reader.join(timeout=10)
        if log.left_out:
            print(f"[{module}] {log.left_out} more warnings and errors not shown", file=sys.stderr)


def photos(count: int, size: tuple[int, int] = (320, 240), image_format: str = "JPEG") -> list[bytes]:
    """`count` different pictures of noise, 320x240 JPEG photos by default: the decoding and resizing cost of
    real ones."""
    rng = np.random.default_rng(0)
    width, height = size
    result = []
    for _ in range(count):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, image_format, quality=90)
        result.append(buffer.getvalue())
    return result


def unit_vectors(rng: np.random.Generator, count: int, dimension: int = 512) -> np.ndarray:
    """`count` random unit vectors, float32."""
    vectors = rng.standard_normal((count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def synthetic_rows(first: int, vectors: np.ndarray, model: str) -> list[dict[str, object]]:
    """Rows as the search service stores them, one per vector, their ids numbered from `first`."""
    return [
        {
            "id": f"{first + i:064x}",
            "vector": vector.tolist(),
            "uri": f"synthetic/{first + i}.jpg",
            "model": model,
            "metadata": {},
            "ingested_at": 0,
        }
        for i, vector in enumerate(vectors)
    ]


def p50_ms(work: Callable[[], object], repeats: int) -> float:
    """The median time of `work()` over `repeats` calls, after one call to warm up."""
    work()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return float(np.median(timings) * 1000)


def percentiles_ms(latencies_s: Sequence[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(latencies_s) * 1000, [50, 99])
    return float(p50), float(p99)


def run_concurrently(callers: int, calls: int, call: Callable[[int], object]) -> tuple[float, list[float]]:
    """`calls` calls spread over `callers` threads: the wall time and each call's latency."""
    latencies: list[float] = []

    def timed(index: int) -> None:
        start = time.perf_counter()
        call(index)
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(timed, range(calls)))
    return time.perf_counter() - start, latencies


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """CPU time (user + system) that process `pid` has used so far, and with `with_children` that of its
    descendants still running (Milvus Lite runs as a child of the search service). Linux only (/proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    if with_children:
        for listing in glob.glob(f"/proc/{pid}/task/*/children"):
            with open(listing) as children:
                seconds += sum(cpu_seconds(int(child), True) for child in children.read().split())
    return seconds


@contextmanager
def cpu_used(pid: int) -> Iterator[dict[str, float]]:
    """The CPU seconds that process `pid` ("own") and its descendants ("children") use within the block: per
    item under load, what a service's host spends, and so how many cores it needs at a given rate."""
    own, everything = cpu_seconds(pid), cpu_seconds(pid, True)
    used: dict[str, float] = {}
    yield used
    used["own"] = cpu_seconds(pid) - own
    used["children"] = cpu_seconds(pid, True) - everything - used["own"]

"""What the benchmarks share: services as real subprocesses, latency percentiles, and a printed table."""

import glob
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
from PIL import Image


@contextmanager
def service(module: str, args: Sequence[str], ready_line: str) -> Iterator[tuple[str, int]]:
    """`python -m module args...` until the block ends; yields the address from its `ready_line` log line
    and the process id."""
    command = [sys.executable, "-m", module, *args, "--metrics-port", "-1"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if ready_line in line:
                address = json.loads(line)["message"].split(" on ", 1)[1].split()[0]
                break
        else:
            raise RuntimeError(f"{module} exited with {process.wait()} before it was ready")
        # Keep reading its log, so that a full pipe never blocks the service.
        threading.Thread(target=process.stderr.read, daemon=True).start()
        yield address, process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)


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

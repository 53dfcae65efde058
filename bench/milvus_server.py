"""Ingestion's reads and writes on a Milvus standalone server (the `milvus` package, as the tests start it).

    .venv/bin/python bench/milvus_server.py [--batches 30]

Each batch of 64 new rows goes through what ingestion does with it on a server: the ids checked before
encoding (`Store.existing_ids`, a Strong read), then `Store.store_new`. Then the same rows are upserted again
by a plain client, the write alone, for comparison. Then searches at each consistency level, with nothing
written for a second before them and just after an upsert by the same client.
"""

import argparse
import statistics
import tempfile
import time

import numpy as np
from harness import print_table, synthetic_rows, unit_vectors
from milvus import MilvusServer
from pymilvus import MilvusClient

from search_service.store import SHOWN, Store


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--searches", type=int, default=20)
    args = parser.parse_args()
    vectors = unit_vectors(np.random.default_rng(0), 64)
    timings: dict[str, list[float]] = {"check": [], "store_new": [], "upsert": []}
    with tempfile.TemporaryDirectory() as folder:
        server = MilvusServer()
        server.set_base_dir(folder)
        server.start()
        try:
            uri = f"http://127.0.0.1:{server.listen_port}"
            store, plain = Store(uri, "", 60.0, "AUTOINDEX", {}), MilvusClient(uri)
            store.create("server", "random", 512)
            for batch in range(args.batches):
                rows = synthetic_rows(batch * 64, vectors, "random")
                started = time.perf_counter()
                store.existing_ids("server", [row["id"] for row in rows])
                checked = time.perf_counter()
                store.store_new("server", rows)
                stored = time.perf_counter()
                plain.upsert("server", rows)
                timings["check"].append(checked - started)
                timings["store_new"].append(stored - checked)
                timings["upsert"].append(time.perf_counter() - stored)
            searches = search_timings(plain, vectors, args.searches)
            store.close()
            plain.close()
        finally:
            server.stop()
    p50 = {name: statistics.median(values) * 1000 for name, values in timings.items()}
    print_table(
        f"Ingestion on a Milvus standalone server, {args.batches} batches of 64 new rows",
        ["step", "p50 ms", "rows/s, one at a time"],
        [
            [what, f"{p50[name]:.1f}", f"{64000 / p50[name]:,.0f}"]
            for name, what in [
                ("check", "check the ids before encoding (Strong read)"),
                ("store_new", "Store.store_new (on a server: the upsert, no second check)"),
                ("upsert", "the same upsert alone, for comparison"),
            ]
        ],
    )
    print()
    print_table(
        f"A search on that server (top_k 10), {args.searches} of each, alternated",
        ["consistency level", "p50 ms, nothing written since", "p50 ms, just after an upsert"],
        [
            [
                f"{level}{' (the search service: Store.SHOWN)' if level == SHOWN else ''}",
                *(f"{statistics.median(searches[level, after]) * 1000:.1f}" for after in (False, True)),
            ]
            for level in CONSISTENCY_LEVELS
        ],
    )


CONSISTENCY_LEVELS = ("Strong", "Session", "Bounded")
IDLE_S = 1.0  # longer than the server's time tick (200 ms by default)


def search_timings(
    client: MilvusClient, vectors: np.ndarray, count: int
) -> dict[tuple[str, bool], list[float]]:
    """Seconds per search at each consistency level, with nothing written for a while before it and just
    after an upsert by the same client."""
    timings: dict[tuple[str, bool], list[float]] = {
        (level, after): [] for level in CONSISTENCY_LEVELS for after in (False, True)
    }
    rows = synthetic_rows(10**6, vectors[:1], "random")

    def search(level: str, after: bool) -> None:
        started = time.perf_counter()
        client.search("server", data=[vectors[0].tolist()], limit=10, consistency_level=level)
        timings[level, after].append(time.perf_counter() - started)

    for _ in range(count):
        time.sleep(IDLE_S)  # searches write nothing: each of these has nothing written before it for a while
        for level in CONSISTENCY_LEVELS:
            search(level, after=False)
        for level in CONSISTENCY_LEVELS:
            client.upsert("server", rows)
            search(level, after=True)
    return timings


if __name__ == "__main__":
    main()

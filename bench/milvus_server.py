"""Ingestion's reads and writes on a Milvus standalone server (the `milvus` package, as the tests start it).

    .venv/bin/python bench/milvus_server.py [--batches 30]

Each batch of 64 new rows goes through what ingestion does with it on a server: the ids checked before
encoding (`Store.existing_ids`, a Strong read), then `Store.store_new`. Then the same rows are upserted again
by a plain client, the write alone, for comparison.
"""

import argparse
import statistics
import tempfile
import time

import numpy as np
from harness import print_table, synthetic_rows, unit_vectors
from milvus import MilvusServer
from pymilvus import MilvusClient

from search_service.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=30)
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


if __name__ == "__main__":
    main()

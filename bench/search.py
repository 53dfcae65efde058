"""End-to-end ingestion and query speed of the search service, against the Milvus tutorial's way.

    .venv/bin/python bench/search.py [--images 64] [--rows 1000 100000] [--queries 200]

The encoder runs a randomly initialised ViT-B/32 (real architecture and cost) on the CPU, as a subprocess;
the search service runs as a subprocess on a Milvus Lite file in a temporary folder. The large collections
get random unit vectors inserted directly (the encoder would take hours to make 100,000 on a CPU).
"""

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from harness import (
    cpu_used,
    percentiles_ms,
    photos,
    print_table,
    run_concurrently,
    service,
    synthetic_rows,
    unit_vectors,
)
from tutorial import tutorial_ingest

from encoder_service.checkpoints import VIT_B_32, random_clip, save_state_dict
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc, search_pb2, search_pb2_grpc
from search_service.store import Store

INSERT_CHUNK = 1000  # Milvus Lite 2.5.1 inserts fast only in calls of about 1,000 rows or fewer


def prefill(
    milvus_file: str, model: str, sizes: list[int], queries: int, result: "multiprocessing.Queue"
) -> None:
    """Fills one collection per size with random unit vectors; reports Milvus's own search p50 per size."""
    store = Store(milvus_file, "", 60.0, "AUTOINDEX", {})
    rng = np.random.default_rng(0)
    milvus_p50 = {}
    for size in sizes:
        name = f"rows_{size}"
        store.create(name, model, 512)
        for offset in range(0, size, INSERT_CHUNK):
            rows = synthetic_rows(offset, unit_vectors(rng, min(INSERT_CHUNK, size - offset)), model)
            store.upsert(name, rows)
        latencies = []
        for _ in range(queries):
            query = rng.standard_normal(512).astype(np.float32)
            start = time.perf_counter()
            store.search(name, (query / np.linalg.norm(query)).tolist(), 10, 0, "", ["id", "uri", "metadata"])
            latencies.append(time.perf_counter() - start)
        milvus_p50[size] = percentiles_ms(latencies)[0]
    store.close()
    result.put(milvus_p50)


def rows_per_second_as_it_grows(milvus_file: str, write_with_insert: bool, rows: int) -> list[str]:
    """Rows per second written 64 at a time into a new Milvus Lite collection, for each sixth of `rows` and
    overall: the ids checked, then the new rows written, with an insert (the search service's
    `Store.store_new` on Milvus Lite) or an upsert (its write until 2026-11-28, and still on a server)."""
    store = Store(milvus_file, "", 60.0, "AUTOINDEX", {})
    store.create("growing", "random", 512)
    vectors = unit_vectors(np.random.default_rng(0), 64)
    sixth, rates = rows // 6, []
    started = window = time.perf_counter()
    for written in range(0, rows, 64):
        batch = synthetic_rows(written, vectors, "random")
        if write_with_insert:
            store.store_new("growing", batch)
        else:
            store.existing_ids("growing", [row["id"] for row in batch])
            store.upsert("growing", batch)
        if (written + 64) % sixth == 0:
            now = time.perf_counter()
            rates.append(f"{sixth / (now - window):,.0f}")
            window = now
    store.close()
    return [*rates, f"{rows / (time.perf_counter() - started):,.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--grow-rows", type=int, default=38_400, help="rows written to time writes")
    args = parser.parse_args()
    if args.grow_rows <= 0 or args.grow_rows % 384:
        parser.error("--grow-rows must be a multiple of 384: six windows of whole calls of 64 rows")
    images = photos(args.images)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = str(Path(folder) / "random-vit-b32.pt")
        save_state_dict(random_clip(VIT_B_32), checkpoint)
        tutorial_rate = tutorial_ingest(checkpoint, images, str(Path(folder) / "tutorial.db"), "cpu")
        milvus_file = str(Path(folder) / "milvus.db")
        encoder_args = ["--model", checkpoint, "--device", "cpu", "--port", "0"]
        with service("encoder_service", encoder_args, "encoder serving") as (encoder_address, _):
            with grpc.insecure_channel(encoder_address) as channel:
                encoder = encoder_pb2_grpc.EncoderServiceStub(channel)
                model = encoder.GetModelInfo(encoder_pb2.GetModelInfoRequest()).model
                query = encoder_pb2.EncodeTextRequest(texts=["a white dog"])
                _, encode_latencies = run_concurrently(1, args.queries, lambda _: encoder.EncodeText(query))
            results: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
            filler = multiprocessing.get_context("spawn").Process(
                target=prefill, args=(milvus_file, model, args.rows, args.queries, results)
            )
            filler.start()
            milvus_p50 = results.get()
            filler.join()
            search_args = ["--encoder", encoder_address, "--milvus-uri", milvus_file, "--port", "0"]
            with (
                service("search_service", search_args, "search service listening") as (address, search_pid),
                grpc.insecure_channel(address) as channel,
            ):
                stub = search_pb2_grpc.SearchServiceStub(channel)
                with cpu_used(search_pid) as used:
                    start = time.perf_counter()
                    results_seen = list(
                        stub.Ingest(
                            search_pb2.IngestRequest(image=data, uri=f"{index}.jpg")
                            for index, data in enumerate(images)
                        )
                    )
                    ingest_rate = len(images) / (time.perf_counter() - start)
                own, milvus = (used[part] / len(images) * 1000 for part in ("own", "children"))
                assert results_seen[-1].totals.stored == len(images), results_seen[-1].totals
                query_rows = []
                for size in args.rows:
                    request = search_pb2.SearchTextRequest(
                        text="a white dog", options=search_pb2.SearchOptions(collection=f"rows_{size}")
                    )
                    stub.SearchText(request)
                    for callers in (1, 8):
                        seconds, latencies = run_concurrently(
                            callers, args.queries, lambda _, request=request: stub.SearchText(request)
                        )
                        p50, p99 = percentiles_ms(latencies)
                        query_rows.append(
                            [
                                f"{size:,}",
                                callers,
                                f"{p50:.1f}",
                                f"{p99:.1f}",
                                f"{args.queries / seconds:.1f}",
                            ]
                        )
                        if callers == 1:
                            total_p50 = p50
                    encode_p50 = percentiles_ms(encode_latencies)[0]
                    query_rows[-2].append(
                        f"encode {encode_p50:.1f} + Milvus {milvus_p50[size]:.1f} + gRPC/service "
                        f"{total_p50 - encode_p50 - milvus_p50[size]:.1f}"
                    )
                    query_rows[-1].append("")

    print_table(
        f"Ingestion, {args.images} pictures of 320x240 (random ViT-B/32 on the CPU, Milvus Lite)",
        ["path", "images/s", "÷ tutorial"],
        [
            [
                "client → search → encoder → Milvus (this product)",
                f"{ingest_rate:.1f}",
                f"{ingest_rate / tutorial_rate:.2f}",
            ],
            ["tutorial loop: encode one image, insert one row", f"{tutorial_rate:.1f}", "1.00"],
        ],
    )
    print_table(
        "CPU time per picture during that ingestion",
        ["process", "ms per picture"],
        [
            ["search service", f"{own:.2f}"],
            ["its child processes (Milvus Lite, the thumbnail processes)", f"{milvus:.2f}"],
        ],
    )
    print_table(
        "Text queries through the search service ('a white dog', top_k 10, Milvus Lite AUTOINDEX)",
        ["rows", "clients", "p50 ms", "p99 ms", "queries/s", "p50 split at 1 client (ms)"],
        query_rows,
    )
    with tempfile.TemporaryDirectory() as folder:
        written = [
            [label, *rows_per_second_as_it_grows(str(Path(folder) / f"{label}.db"), insert, args.grow_rows)]
            for label, insert in (("insert", True), ("upsert", False))
        ]
    sixth = args.grow_rows // 6
    print_table(
        "Writes into a new Milvus Lite collection, 64 rows a call after checking their ids (rows/s)",
        ["write", *(f"rows {n * sixth:,}-{(n + 1) * sixth:,}" for n in range(6)), "overall"],
        written,
    )


if __name__ == "__main__":
    main()

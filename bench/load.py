"""Load on loopback: N clients mixing ingests and queries for T seconds against both services.

    .venv/bin/python bench/load.py [--clients 8] [--seconds 30] [--model PATH] [--stream-pictures 20000]

Both services run as subprocesses (the encoder on a small 512-d CLIP made in a temporary folder unless
--model says otherwise). Prints per-RPC latency, the errors (only RESOURCE_EXHAUSTED is acceptable, as
deliberate back-pressure), each service's resident memory after the warm-up and after the run, and then what
one long Ingest stream of new pictures makes the search service hold until it ends.
"""

import argparse
import random
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import grpc
from harness import percentiles_ms, photos, print_table, service

from encoder_service.checkpoints import TINY, random_clip, save_state_dict
from imagesearch.v1 import search_pb2, search_pb2_grpc

QUERIES = ["a white dog", "a red car", "a photo of the beach", "two cats on a sofa", "a city at night"]


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def stream_growth_mib(
    stub: search_pb2_grpc.SearchServiceStub, search_pid: int, pictures: list[bytes]
) -> float:
    """How much more memory the search service holds at the end of one Ingest stream of `pictures` than
    before it: what a stream keeps per picture, however long it runs."""
    before, at_end = resident_mib(search_pid), 0.0
    requests = (search_pb2.IngestRequest(image=p, uri=f"long/{i}.png") for i, p in enumerate(pictures))
    for received, _ in enumerate(stub.Ingest(requests), start=1):
        if received == len(pictures):  # the stream is still open: it holds all it keeps
            at_end = resident_mib(search_pid)
    return at_end - before


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--model", default="")
    parser.add_argument("--stream-pictures", type=int, default=20_000, help="pictures in the one long stream")
    args = parser.parse_args()
    pictures = photos(200)
    with tempfile.TemporaryDirectory() as folder:
        model = args.model or str(Path(folder) / "tiny.pt")
        if not args.model:
            save_state_dict(random_clip(TINY), model)
        encoder_args = ["--model", model, "--device", "cpu", "--port", "0"]
        with service("encoder_service", encoder_args, "encoder serving") as (encoder, encoder_pid):
            search_args = [
                "--encoder",
                encoder,
                "--milvus-uri",
                str(Path(folder) / "milvus.db"),
                "--port",
                "0",
            ]
            with (
                service("search_service", search_args, "search service listening") as (address, search_pid),
                grpc.insecure_channel(address) as channel,
            ):
                stub = search_pb2_grpc.SearchServiceStub(channel)
                latencies: dict[str, list[float]] = defaultdict(list)
                errors: Counter[str] = Counter()
                lock = threading.Lock()

                def one_call(rng: random.Random) -> None:
                    kind = rng.choices(["Ingest", "SearchText", "SearchImage"], weights=[2, 5, 2])[0]
                    started = time.perf_counter()
                    try:
                        if kind == "Ingest":
                            batch = rng.sample(pictures, 8)
                            list(
                                stub.Ingest(
                                    search_pb2.IngestRequest(image=p, uri=f"{hash(p)}.jpg") for p in batch
                                )
                            )
                        elif kind == "SearchText":
                            stub.SearchText(
                                search_pb2.SearchTextRequest(text=rng.choice(QUERIES)), timeout=60
                            )
                        else:
                            stub.SearchImage(
                                search_pb2.SearchImageRequest(image=rng.choice(pictures)), timeout=60
                            )
                        with lock:
                            latencies[kind].append(time.perf_counter() - started)
                    except grpc.RpcError as error:
                        with lock:
                            errors[f"{kind} {error.code().name}"] += 1

                def client(seed: int, until: float) -> None:
                    rng = random.Random(seed)
                    while time.monotonic() < until:
                        one_call(rng)

                def run(seconds: float) -> None:
                    until = time.monotonic() + seconds
                    threads = [threading.Thread(target=client, args=(i, until)) for i in range(args.clients)]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()

                run(args.warmup_seconds)
                warm = {"encoder": resident_mib(encoder_pid), "search": resident_mib(search_pid)}
                latencies.clear()
                errors.clear()
                run(args.seconds)
                after = {"encoder": resident_mib(encoder_pid), "search": resident_mib(search_pid)}
                rows_stored = stub.Stats(search_pb2.StatsRequest()).count
                growth = stream_growth_mib(stub, search_pid, photos(args.stream_pictures, (32, 24), "PNG"))

    print_table(
        f"{args.clients} clients for {args.seconds:.0f} s (after {args.warmup_seconds:.0f} s of warm-up); "
        f"{rows_stored} pictures stored",
        ["RPC", "calls", "p50 ms", "p99 ms"],
        [
            [kind, len(values), *(f"{v:.1f}" for v in percentiles_ms(values))]
            for kind, values in sorted(latencies.items())
        ],
    )
    unexpected = {kind: count for kind, count in errors.items() if not kind.endswith("RESOURCE_EXHAUSTED")}
    print_table("errors", ["kind", "count"], [[k, v] for k, v in sorted(errors.items())] or [["none", 0]])
    print_table(
        "resident memory (MiB)",
        ["service", "after warm-up", "after the run", "growth"],
        [
            [name, f"{warm[name]:.0f}", f"{after[name]:.0f}", f"{(after[name] / warm[name] - 1) * 100:+.1f}%"]
            for name in warm
        ],
    )
    print_table(
        "One long Ingest stream: the search service's memory at its end, against before it",
        ["new pictures (32x24 PNG)", "MiB more", "KiB per picture"],
        [[f"{args.stream_pictures:,}", f"{growth:+.1f}", f"{growth * 1024 / args.stream_pictures:.2f}"]],
    )
    if unexpected:
        raise SystemExit(f"unexpected errors: {unexpected}")


if __name__ == "__main__":
    main()

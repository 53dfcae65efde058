"""The encoder tier on a GPU, everything side by side in one run (needs a CUDA device; about 3 minutes).

    PYTHONPATH=. python bench/gpu.py [--clients 8] [--seconds 10]

A randomly initialised ViT-B/32 (the real architecture and cost) in fp16, 500x375 JPEG photos of about 88 KB
(ImageNet's size), client processes started with `spawn` sending 32 images or 64 texts per call to the
encoder run with its default flags. Prints: the model in-process (the ceiling), the service under load, the
ingestion through the search service into Milvus Lite, the Milvus tutorial's one-at-a-time loop, and one short
query's latency, with ratios; the services' CPU time per item; and how close the service's vectors are, under
load and alone, to CLIP's own preprocessing of the same pictures in-process. Each table is printed as soon as
it is measured, and a measurement that fails is reported without costing the others (exit status 1 then).

`--device cpu --model demo/small-clip-synthetic.pt --seconds 2` rehearses every step on a machine without a
GPU, to check the script before a GPU's time is spent on it; its figures mean nothing.
"""

import argparse
import io
import math
import multiprocessing
import multiprocessing.pool
import struct
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch
from harness import cpu_used, p50_ms, percentiles_ms, print_table, service
from PIL import Image
from tutorial import tutorial_ingest

from encoder_service.checkpoints import VIT_B_32, random_clip, save_state_dict
from encoder_service.graphs import GraphedForward
from encoder_service.images import ImageLimits, jpeg_for_device
from encoder_service.model import ClipModel
from encoder_service.preprocess import clip_transform, decode_on_device
from encoder_service.tokens import tokenize
from encoder_service.towers import trimmed_tokens
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc, search_pb2, search_pb2_grpc
from synthetic.pictures import camera_photo

BATCH = 256  # the in-process ceiling's batch
WORDS = ["a", "white", "dog", "red", "circle", "photo", "of", "the", "cat", "on", "grass", "beach", "car"]
OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
CALL_TIMEOUT_S = 60  # no call takes near this: one that does is a wedged service, which must not eat the run


def photos(count: int) -> list[bytes]:
    """ImageNet-sized photos: 500x375, a camera's smooth detail plus grain, about 88 KB as JPEG."""
    result = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        pixels = np.asarray(camera_photo(500, 375, seed)).astype(np.float32) + rng.normal(
            0, 16, (375, 500, 3)
        )
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        result.append(buffer.getvalue())
    return result


def distinct(jpeg: bytes, number: int) -> bytes:
    """The same picture with a comment that makes its bytes, and so its id, unique."""
    comment = f"copy {number}".encode()
    after_app0 = 4 + int.from_bytes(jpeg[4:6], "big")  # SOI, then the JFIF segment
    return jpeg[:after_app0] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[after_app0:]


def captions(count: int, seed: int) -> list[str]:
    """Different captions every call, so that no vector comes from the encoder's cache of queries."""
    rng = np.random.default_rng(seed)
    return [
        f"{' '.join(rng.choice(WORDS, size=rng.integers(3, 9)))} {seed} {index}" for index in range(count)
    ]


# Client processes: each calls for the same window of wall-clock time and reports what it got done.


def _wait_for(start_at: float) -> None:
    while time.time() < start_at:
        time.sleep(0.001)


def image_vectors(response: encoder_pb2.EncodeImagesResponse) -> np.ndarray:
    """The response's vectors, one row per picture (each must have one)."""
    return np.array([result.vector.values for result in response.results], dtype=np.float32)


def lowest_cosine(vectors: np.ndarray, reference: np.ndarray) -> float:
    """The lowest cosine between each unit vector and its reference row."""
    return float(np.min(np.sum(vectors * reference, axis=1)))


@contextmanager
def client_channel(address: str) -> Iterator[grpc.Channel]:
    """A client process's channel; a failed call raises what the pool can report (an RpcError does not
    pickle)."""
    with grpc.insecure_channel(address, OPTIONS) as channel:
        try:
            yield channel
        except grpc.RpcError as error:
            raise RuntimeError(f"{error.code()} {error.details()}") from None


def image_client(
    address: str, images: list[bytes], reference: np.ndarray, start_at: float, stop_at: float
) -> tuple[int, float]:
    """Vectors received within the window, for calls of `images`, and the lowest cosine of any of them to
    `reference` (the same pictures' vectors from a call made alone)."""
    with client_channel(address) as channel:
        stub, done, lowest = encoder_pb2_grpc.EncoderServiceStub(channel), 0, 1.0
        request = encoder_pb2.EncodeImagesRequest(images=images)
        stub.EncodeImages(request, timeout=CALL_TIMEOUT_S)
        _wait_for(start_at)
        while time.time() < stop_at:
            vectors = image_vectors(stub.EncodeImages(request, timeout=CALL_TIMEOUT_S))
            lowest = min(lowest, lowest_cosine(vectors, reference))
            done += len(vectors) if time.time() <= stop_at else 0
    return done, lowest


def text_client(address: str, per_call: int, seed: int, start_at: float, stop_at: float) -> int:
    """Vectors received within the window, for calls of `per_call` captions never sent before."""
    with client_channel(address) as channel:
        stub, done, call = encoder_pb2_grpc.EncoderServiceStub(channel), 0, 0
        _wait_for(start_at)
        while time.time() < stop_at:
            call += 1
            request = encoder_pb2.EncodeTextRequest(texts=captions(per_call, seed * 1_000_000 + call))
            vectors = len(stub.EncodeText(request, timeout=CALL_TIMEOUT_S).results)
            done += vectors if time.time() <= stop_at else 0
    return done


def ingest_client(address: str, photos: list[bytes], first: int, count: int, stop_at: float) -> int:
    """Streams new pictures until `stop_at`; how many were stored."""

    def requests() -> Iterator[search_pb2.IngestRequest]:
        for number in range(first, first + count):
            if time.time() >= stop_at:
                return
            picture = distinct(photos[number % len(photos)], number)
            yield search_pb2.IngestRequest(image=picture, uri=f"{number}.jpg")

    with client_channel(address) as channel:
        results = list(search_pb2_grpc.SearchServiceStub(channel).Ingest(requests()))
    return results[-1].totals.stored if results else 0


# In-process measurements.


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(work, items: int, seconds: float, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    """Items per second of `work()` (which does `items` items), repeated for about `seconds`."""
    work()
    synchronize(device)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        work()
        done += items
    synchronize(device)
    return done / (time.perf_counter() - started)


def in_process(
    checkpoint: str, device_name: str, jpegs: list[bytes], seconds: float
) -> tuple[dict[str, float], np.ndarray]:
    """The model's rates and short-query latencies in-process, and each picture's vector the Milvus
    tutorial's way (CLIP's own preprocessing, one picture at a time)."""
    model = ClipModel(checkpoint, device_name)
    device, resolution, on_cuda = model.device, model.image_resolution, model.device.type == "cuda"
    images, texts = GraphedForward(model.image_vectors), GraphedForward(model.text_vectors)
    tokens = trimmed_tokens(tokenize(captions(BATCH, 0), model.context_length).tokens)
    query = trimmed_tokens(tokenize(["a white dog"], model.context_length).tokens).to(device)
    if on_cuda:
        try:
            images.capture([(BATCH, resolution, resolution, 3)], torch.uint8, device)
            texts.capture([tuple(tokens.shape), tuple(query.shape)], torch.long, device)
        except RuntimeError as error:  # the rest is still worth measuring: the rows below run eagerly
            print(f"capturing CUDA graphs failed, in-process passes run eagerly: {error}", file=sys.stderr)
    on_host = torch.randint(0, 256, (BATCH, resolution, resolution, 3), dtype=torch.uint8)
    on_host = on_host.pin_memory() if on_cuda else on_host
    on_device, tokens = on_host.to(device), tokens.to(device)
    results = {
        "images, device tensors": rate(lambda: images(on_device), BATCH, seconds, device),
        "images, pinned host memory": rate(
            lambda: images(on_host.to(device, non_blocking=True)), BATCH, seconds, device
        ),
        "texts, device tensors": rate(lambda: texts(tokens), BATCH, seconds, device),
        "query eager ms": p50_ms(lambda: model.text_vectors(query).cpu(), 100),
        "query graph ms": p50_ms(lambda: texts(query).cpu(), 100),
        "graphs captured": len(texts.captured_shapes),
    }
    preprocess, vectors = clip_transform(resolution), []
    with torch.inference_mode():
        started = time.perf_counter()
        for data in jpegs:  # the Milvus tutorial: open, preprocess, encode_image, one at a time
            picture = preprocess(Image.open(io.BytesIO(data)).convert("RGB"))[None].to(device)
            features = model.model.encode_image(picture).float()
            vectors.append((features / features.norm(dim=-1, keepdim=True)).squeeze().tolist())
        results["tutorial loop"] = len(jpegs) / (time.perf_counter() - started)
    return results, np.array(vectors, dtype=np.float32)


def cpu_ms_per_item(used: dict[str, float], items: float) -> str:
    return f"{used['own'] * 1000 / items:.2f} / {used['children'] * 1000 / items:.2f}"


def in_window(
    pool: multiprocessing.pool.Pool, client: Callable[..., Any], arguments: list[tuple], seconds: float
) -> list[Any]:
    """What `client` returns, run in every pool process for the same `seconds` of wall-clock time (they start
    together, 3 s from now, each having made its connection)."""
    start_at = time.time() + 3
    calls = [(*argument, start_at, start_at + seconds) for argument in arguments]
    return pool.starmap_async(client, calls).get(timeout=seconds + CALL_TIMEOUT_S)


def lone_queries_ms(stub: encoder_pb2_grpc.EncoderServiceStub, texts: list[str]) -> tuple[float, float]:
    """p50 and p99 of one short query at a time."""
    latencies = []
    for text in texts:
        request = encoder_pb2.EncodeTextRequest(texts=[text])
        started = time.perf_counter()
        stub.EncodeText(request, timeout=CALL_TIMEOUT_S)
        latencies.append(time.perf_counter() - started)
    return percentiles_ms(latencies)


def ingest(
    pool: multiprocessing.pool.Pool,
    streams: int,
    search: str,
    search_pid: int,
    jpegs: list[bytes],
    seconds: float,
) -> tuple[float, str]:
    """Pictures stored per second through the search service from `streams` pool processes streaming new
    pictures for `seconds`, and the CPU ms per picture of the search service / of its child processes
    (Milvus Lite and the thumbnail processes).

    A batch from each process first makes the collection and starts the thumbnail processes, which took
    0.7 s on 2 cores: the steady rate is measured, as the tutorial's loop is timed once its collection is
    made."""
    share = 1_000_000  # pictures numbered apart for each stream: every one is new
    warm_up = [(search, jpegs, (streams + stream) * share, 64, time.time() + 60) for stream in range(streams)]
    pool.starmap_async(ingest_client, warm_up).get(timeout=2 * CALL_TIMEOUT_S)
    with cpu_used(search_pid) as used:
        started = time.time()
        arguments = [(search, jpegs, stream * share, share, started + seconds) for stream in range(streams)]
        stored = sum(pool.starmap_async(ingest_client, arguments).get(timeout=seconds + CALL_TIMEOUT_S))
        elapsed = time.time() - started
    return stored / elapsed, cpu_ms_per_item(used, stored)


@contextmanager
def reported(what: str, failures: list[str]) -> Iterator[None]:
    """A measurement whose failure must not cost the others (a GPU's time is scarce): its error is printed
    and noted, and the run goes on."""
    try:
        yield
    except Exception:
        traceback.print_exc()
        print(f"\n{what}: FAILED (the traceback is on stderr)")
        failures.append(what)


def print_in_process(device: str, alone: dict[str, float]) -> None:
    processor = torch.cuda.get_device_name() if device == "cuda" else "the CPU (a rehearsal)"
    graph = "captured" if alone["graphs captured"] else "none: eager"
    print_table(
        f"The model in-process on {processor}, {time.strftime('%Y-%m-%d')} (the ceiling)",
        ["what", "per second", "ms"],
        [
            [f"images, batch {BATCH}, device tensors", f"{alone['images, device tensors']:,.0f}", ""],
            [
                f"images, batch {BATCH}, from pinned host memory",
                f"{alone['images, pinned host memory']:,.0f}",
                "",
            ],
            [f"texts, batch {BATCH}, device tensors", f"{alone['texts, device tensors']:,.0f}", ""],
            ["images, the tutorial's loop, one at a time", f"{alone['tutorial loop']:,.0f}", ""],
            ["one short query ('a white dog'), eager forward, p50", "", f"{alone['query eager ms']:.2f}"],
            [f"the same, CUDA graph ({graph}), p50", "", f"{alone['query graph ms']:.2f}"],
        ],
    )


def stages_alone(device_name: str, jpegs: list[bytes], resolution: int, context_length: int) -> None:
    """The host and device work before a forward pass, alone in this process: which stage bounds the service
    if it falls short of the model's ceiling."""
    device = torch.device(device_name)
    limits = ImageLimits(max_bytes=1 << 30, max_pixels=1 << 30)
    device_jpegs = [jpeg for data in jpegs if (jpeg := jpeg_for_device(data, limits)) is not None]
    assert len(device_jpegs) == len(jpegs), "every photo here is a plain RGB JPEG, which the device decodes"
    to_decode = [device_jpegs[index % len(device_jpegs)] for index in range(BATCH)]
    routed = [jpegs[index % len(jpegs)] for index in range(BATCH)]
    failed = sum(pixels is None for pixels in decode_on_device(to_decode, device, resolution))
    assert not failed, f"{failed} of {BATCH} photos failed to decode on the {device.type}: see the warning"
    texts = captions(BATCH, 1)
    decoder = "nvJPEG" if device.type == "cuda" else "libjpeg"
    print_table(
        "The stages before a forward pass, alone in this process",
        ["what", "per second"],
        [
            [
                f"JPEGs decoded on the {device.type} ({decoder}), resized and cropped, {BATCH} a call",
                f"{rate(lambda: decode_on_device(to_decode, device, resolution), BATCH, 5, device):,.0f}",
            ],
            [
                "JPEG headers read to route them to the device (jpeg_for_device), one thread",
                f"{rate(lambda: [jpeg_for_device(data, limits) for data in routed], BATCH, 5, device):,.0f}",
            ],
            [
                "texts tokenised by CLIP's tokenizer, one thread",
                f"{rate(lambda: tokenize(texts, context_length), BATCH, 5, device):,.0f}",
            ],
        ],
    )


def print_setting(info: encoder_pb2.GetModelInfoResponse, jpegs: list[bytes], clients: int) -> None:
    size = np.mean([len(jpeg) for jpeg in jpegs]) / 1000
    print(
        f"\nThe service: {info.model} ({info.dtype}); {len(jpegs)} JPEGs of 500x375, {size:.0f} KB on "
        f"average; {clients} client processes; the encoder's defaults: batch <= {info.max_batch_size}, "
        f"queue {info.max_queue_size}, {info.decode_workers} decode workers, JPEGs decoded "
        f"{'on the device' if info.jpeg_decoding == 'device' else 'by the worker processes'}, "
        f"{info.image_cuda_graphs} + {info.text_cuda_graphs} CUDA graphs"
    )


def images_under_load(
    stub: encoder_pb2_grpc.EncoderServiceStub,
    clients: multiprocessing.pool.Pool,
    args: argparse.Namespace,
    encoder: str,
    encoder_pid: int,
    jpegs: list[bytes],
    alone: dict[str, float],
    clip_vectors: np.ndarray,
) -> None:
    """The Images table, and the exactness of the service's vectors under load, alone and against CLIP's."""
    info = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest(), timeout=CALL_TIMEOUT_S)
    alone_request = encoder_pb2.EncodeImagesRequest(images=jpegs[:32])
    alone_vectors = image_vectors(stub.EncodeImages(alone_request, timeout=CALL_TIMEOUT_S))
    # The CPU time also holds each client's first call, made before the window: a few calls in thousands.
    with cpu_used(encoder_pid) as image_cpu:
        loaded = in_window(
            clients, image_client, [(encoder, jpegs[:32], alone_vectors)] * args.clients, args.seconds
        )
    images_done = sum(done for done, _ in loaded)
    image_rate = images_done / args.seconds
    after = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest(), timeout=CALL_TIMEOUT_S)
    passes = after.image_forward_passes - info.image_forward_passes
    mean_batch = (after.images_encoded - info.images_encoded) / max(1, passes)
    ceiling, tutorial = alone["images, device tensors"], alone["tutorial loop"]
    print_table(
        "Images through the service",
        ["what", "images/s", "÷ ceiling", "÷ tutorial loop"],
        [
            [
                f"{args.clients} processes x 32 images/call (mean batch {mean_batch:.0f})",
                f"{image_rate:,.0f}",
                f"{image_rate / ceiling:.3f}",
                f"{image_rate / tutorial:.1f}",
            ],
            [
                "CPU ms per image: encoder / its decode processes",
                cpu_ms_per_item(image_cpu, images_done),
                "",
                "",
            ],
        ],
    )
    print_table(
        "The service's vectors for 32 of the pictures, lowest cosine",
        ["to", "lowest cosine"],
        [
            [
                "CLIP's own preprocessing in-process, one picture at a time",
                f"{lowest_cosine(alone_vectors, clip_vectors[:32]):.5f}",
            ],
            [
                "the same call made alone, for every call under load",
                f"{min(lowest for _, lowest in loaded):.5f}",
            ],
        ],
    )


def texts_under_load(
    clients: multiprocessing.pool.Pool,
    args: argparse.Namespace,
    encoder: str,
    encoder_pid: int,
    alone: dict[str, float],
) -> None:
    with cpu_used(encoder_pid) as text_cpu:
        texts_done = sum(
            in_window(
                clients, text_client, [(encoder, 64, seed) for seed in range(args.clients)], args.seconds
            )
        )
    text_rate, text_ceiling = texts_done / args.seconds, alone["texts, device tensors"]
    print_table(
        "Texts through the service",
        ["what", "texts/s", "÷ ceiling"],
        [
            [
                f"{args.clients} processes x 64 texts/call",
                f"{text_rate:,.0f}",
                f"{text_rate / text_ceiling:.2f}",
            ],
            ["CPU ms per text: encoder / its processes", cpu_ms_per_item(text_cpu, texts_done), ""],
        ],
    )


def lone_queries(stub: encoder_pb2_grpc.EncoderServiceStub, queries: int, alone: dict[str, float]) -> None:
    """p50 and p99 through the service, and how much more than the same forward in-process (its graph, if
    captured) the p50 is."""
    uncached = lone_queries_ms(stub, [f"a white dog {index}" for index in range(queries)])
    cached = lone_queries_ms(stub, ["a white dog"] * queries)
    in_process = alone["query graph ms"]
    print_table(
        "One short text query ('a white dog') through the service, ms",
        ["what", "p50", "p99", "p50 - in-process"],
        [
            [
                "a different text each time",
                f"{uncached[0]:.2f}",
                f"{uncached[1]:.2f}",
                f"{uncached[0] - in_process:.2f}",
            ],
            ["the same text (from the query cache)", f"{cached[0]:.2f}", f"{cached[1]:.2f}", ""],
        ],
    )


def print_ingestion(streams: int, rate: float, cpu: str, tutorial_rate: float) -> None:
    print_table(
        "Ingestion into Milvus Lite",
        ["what", "pictures/s", "÷ tutorial"],
        [
            [
                f"client -> search service -> encoder -> Milvus Lite, {streams} streams",
                f"{rate:,.0f}",
                f"{rate / tutorial_rate:.1f}" if tutorial_rate else "",
            ],
            [
                "tutorial loop: encode one picture, insert one row",
                f"{tutorial_rate:,.0f}" if tutorial_rate else "failed",
                "1.0" if tutorial_rate else "",
            ],
            ["CPU ms per picture: search service / its children (Milvus Lite, thumbnails)", cpu, ""],
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=8,
        help="client processes (each waits for its answer: 4 keep at most 128 pictures in flight)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measurement under load")
    parser.add_argument("--queries", type=int, default=500, help="lone short queries for p50/p99")
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="cpu: a rehearsal whose figures mean nothing",
    )
    parser.add_argument("--model", default="", help="a checkpoint file (default: a random ViT-B/32)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py measures the encoder on a GPU, and torch sees no CUDA device here")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # each table out as it is made
    jpegs, failures = photos(64), list[str]()
    clients = multiprocessing.get_context("spawn").Pool(args.clients)
    # Once their first answers are in, the processes have imported what they need (torch among it), which
    # would otherwise take the CPU from the in-process measurements.
    clients.map(abs, range(args.clients))
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.model or str(Path(folder) / "random-vit-b32.pt")
        if not args.model:
            save_state_dict(random_clip(VIT_B_32), checkpoint)
        # Ratios to what was not measured read NaN; the service's own figures still count.
        alone: dict[str, float] = defaultdict(lambda: math.nan)
        clip_vectors = np.full((len(jpegs), 512), math.nan, dtype=np.float32)
        with reported("the model in-process", failures):
            alone, clip_vectors = in_process(checkpoint, args.device, jpegs, seconds=5)
            print_in_process(args.device, alone)
        if args.device == "cuda":
            torch.cuda.empty_cache()
        encoder_args = ["--model", checkpoint, "--port", "0", "--device", args.device]
        with (
            service("encoder_service", encoder_args, "encoder serving") as (encoder, encoder_pid),
            grpc.insecure_channel(encoder, OPTIONS) as channel,
        ):
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            info = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest(), timeout=CALL_TIMEOUT_S)
            print_setting(info, jpegs, args.clients)
            with reported("the stages alone", failures):
                stages_alone(args.device, jpegs, info.image_resolution, info.context_length)
            with reported("images through the service", failures):
                images_under_load(stub, clients, args, encoder, encoder_pid, jpegs, alone, clip_vectors)
            with reported("texts through the service", failures):
                texts_under_load(clients, args, encoder, encoder_pid, alone)
            with reported("lone queries", failures):
                lone_queries(stub, args.queries, alone)
            # After the encoder's tables: its Milvus Lite may take a while to start on a cold machine.
            tutorial_ingest_rate = 0.0
            with reported("the tutorial's ingestion loop", failures):
                tutorial_ingest_rate = tutorial_ingest(
                    checkpoint, jpegs * 2, str(Path(folder) / "tutorial.db"), args.device
                )
            milvus_file = str(Path(folder) / "milvus.db")
            search_args = ["--encoder", encoder, "--milvus-uri", milvus_file, "--port", "0"]
            with (
                reported("ingestion", failures),
                service("search_service", search_args, "search service listening") as (search, search_pid),
            ):
                rate, cpu = ingest(clients, args.clients, search, search_pid, jpegs, args.seconds)
                print_ingestion(args.clients, rate, cpu, tutorial_ingest_rate)
    clients.close()
    if failures:
        sys.exit(f"\nfailed: {', '.join(failures)}")


if __name__ == "__main__":
    main()

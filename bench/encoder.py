"""Encoder throughput and latency: the gRPC service against the model in-process and the tutorial's loop.

    .venv/bin/python bench/encoder.py [--images 64] [--texts 256] [--device cpu]

Everything runs on a randomly initialised ViT-B/32 (the real architecture and cost) made in a temporary
folder. Prints one table; compare the ratios, which are measured side by side in this one run.
"""

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import clip
import grpc
import numpy as np
import torch
from harness import p50_ms, percentiles_ms, photos, print_table, run_concurrently, service
from PIL import Image

from encoder_service.checkpoints import VIT_B_32, random_clip, save_state_dict
from encoder_service.images import ImageLimits, clip_pixels, decode_image, smallest_useful_side
from encoder_service.model import ClipModel
from encoder_service.preprocess import clip_transform
from encoder_service.tokens import tokenize
from encoder_service.towers import trimmed_tokens
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc
from synthetic.pictures import camera_photo

CONCURRENCY = (1, 8, 32)


def captions(count: int) -> list[str]:
    words = ["a", "white", "dog", "red", "circle", "photo", "of", "the", "cat", "on", "grass", "beach"]
    rng = np.random.default_rng(1)
    return [" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(count)]


def in_process_rates(model: ClipModel, images: list[bytes], texts: list[str], batch: int) -> dict[str, float]:
    """The ceiling (pre-made batches, no decoding in the timing) and the tutorial's one-at-a-time loop."""
    resolution = model.image_resolution
    pixels = np.stack(
        [clip_pixels(Image.open(io.BytesIO(data)).convert("RGB"), resolution) for data in images]
    )
    tokens = tokenize(texts, model.context_length).tokens
    preprocess = clip_transform(resolution)
    rates = {}
    start = time.perf_counter()
    for offset in range(0, len(images), batch):
        model.image_vectors(torch.from_numpy(pixels[offset : offset + batch]).to(model.device)).cpu()
    rates["image ceiling"] = len(images) / (time.perf_counter() - start)
    start = time.perf_counter()
    for offset in range(0, len(texts), batch):
        model.text_vectors(trimmed_tokens(tokens[offset : offset + batch]).to(model.device)).cpu()
    rates["text ceiling"] = len(texts) / (time.perf_counter() - start)

    with torch.inference_mode():
        start = time.perf_counter()
        for data in images:  # the Milvus tutorial: open, preprocess, encode_image, one at a time
            features = model.model.encode_image(
                preprocess(Image.open(io.BytesIO(data)).convert("RGB"))[None].to(model.device)
            )
            features /= features.norm(dim=-1, keepdim=True)
            features.squeeze().tolist()  # the vector, on the host, for Milvus
        rates["image one-at-a-time"] = len(images) / (time.perf_counter() - start)
        start = time.perf_counter()
        for text in texts:
            features = model.model.encode_text(clip.tokenize([text]).to(model.device))
            features /= features.norm(dim=-1, keepdim=True)
            features.squeeze().tolist()
        rates["text one-at-a-time"] = len(texts) / (time.perf_counter() - start)
    return rates


def short_query_floor(model: ClipModel, repeats: int) -> list[list[str]]:
    """One short query in-process: the full 77-token forward, the trimmed one, by thread count, and on the
    CPU the floor set by reading the text tower's weights once at this machine's memory bandwidth."""
    tokens = tokenize(["a white dog"], model.context_length).tokens
    rows = []

    threads = torch.get_num_threads()
    with torch.inference_mode():
        full = p50_ms(
            lambda: model.model.encode_text(torch.from_numpy(tokens).to(model.device)).cpu(), repeats
        )
    rows.append([f"full 77-token forward ({threads} threads)", f"{full:.1f}"])
    for count in sorted({1, threads}):
        torch.set_num_threads(count)
        p50 = p50_ms(lambda: model.text_vectors(trimmed_tokens(tokens).to(model.device)).cpu(), repeats)
        rows.append([f"first L tokens only, the service's way ({count} threads)", f"{p50:.1f}"])
    torch.set_num_threads(threads)
    if model.device.type == "cpu":  # the floor below reads the host's memory, not a GPU's
        rows.append(text_weights_floor(model))
    return rows


def lone_queries(
    through_service: Callable[[], object], in_process: Callable[[], object], count: int, turn: int = 10
) -> tuple[list[float], list[float]]:
    """Latencies of `count` calls each way, taken in turns of `turn` calls: the machine's drift (it is shared)
    then weighs on both alike."""
    through_service(), in_process()
    latencies: dict[Callable[[], object], list[float]] = {through_service: [], in_process: []}
    for start in range(0, count, turn):
        for way, timings in latencies.items():
            for _ in range(min(turn, count - start)):
                started = time.perf_counter()
                way()
                timings.append(time.perf_counter() - started)
    return latencies[through_service], latencies[in_process]


def camera_photo_decoding(model: ClipModel, repeats: int = 5) -> tuple[str, list[list[str]]]:
    """One 12-megapixel JPEG to CLIP's input: full decoding (CLIP's own way) against the service's reduced
    scale decoding, and how close their vectors are."""
    buffer = io.BytesIO()
    camera_photo(4000, 3000).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    limits = ImageLimits(max_bytes=len(data), max_pixels=12_000_000)
    ways = {
        "CLIP's way: decode every pixel, then resize": lambda: Image.open(io.BytesIO(data)).convert("RGB"),
        "the service's way: libjpeg at 1/4 scale, then resize": lambda: decode_image(
            data, limits, smallest_useful_side(model.image_resolution)
        ),
    }
    preprocess = clip_transform(model.image_resolution)
    milliseconds, vectors = [], []
    for decode in ways.values():
        pixels = preprocess(decode())
        started = time.perf_counter()
        for _ in range(repeats):
            preprocess(decode())
        milliseconds.append((time.perf_counter() - started) / repeats * 1000)
        with torch.inference_mode():
            features = model.model.encode_image(pixels[None].to(model.device))[0].float()
        vectors.append((features / features.norm()).cpu().numpy())
    rows = [
        [how, f"{ms:.1f}", f"{milliseconds[0] / ms:.2f}"] for how, ms in zip(ways, milliseconds, strict=True)
    ]
    rows.append(["cosine between the two vectors", f"{float(vectors[0] @ vectors[1]):.5f}", ""])
    resolution = model.image_resolution
    return (
        f"One 4000x3000 JPEG photo ({len(data) // 1000} KB) to CLIP's {resolution}x{resolution} input",
        rows,
    )


def pathological_inputs(resolution: int, repeats: int = 3) -> list[list[str]]:
    """What an attacker's cheap input costs on the host, CLIP's own steps against the service's, side by side:
    a word of 4,096 random letters tokenised (CLIP's byte-pair loop rescans the whole word every round), and
    a 2,000x1 strip resized and cropped (CLIP's resize makes it 224 x 448,000 pixels first)."""
    rng = np.random.default_rng(3)
    # A new word for every call: both tokenizers remember the words they have split.
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 4096)) for _ in range(repeats + 1)]
    clips_words, our_words = iter(words), iter(words)
    clips_tokenizer = clip.simple_tokenizer.SimpleTokenizer()
    strip = Image.new("RGB", (2000, 1), (120, 60, 200))
    resize, crop = clip_transform(resolution).transforms[:2]
    pairs = {
        "tokenise one word of 4,096 random letters": (
            lambda: clips_tokenizer.encode(next(clips_words)),
            lambda: tokenize([next(our_words)], 77),
        ),
        "resize and crop a 2,000x1 picture": (
            lambda: crop(resize(strip)),
            lambda: clip_pixels(strip, resolution),
        ),
    }
    rows = []
    for what, (clips_way, ours) in pairs.items():
        clips_ms, our_ms = p50_ms(clips_way, repeats), p50_ms(ours, repeats)
        rows.append([what, f"{clips_ms:.1f}", f"{our_ms:.1f}", f"{clips_ms / our_ms:.0f}"])
    return rows


def text_weights_floor(model: ClipModel) -> list[str]:
    text_weights = sum(
        p.numel() * p.element_size()
        for name, p in model.model.named_parameters()
        if not name.startswith("visual.") and name != "token_embedding.weight"
    )
    block = np.ones(64 << 20, dtype=np.float32)  # 256 MiB, past every cache
    started = time.perf_counter()
    for _ in range(5):
        block.sum()
    bandwidth = 5 * block.nbytes / (time.perf_counter() - started)
    return [
        f"floor: {text_weights / 2**20:.0f} MiB of text weights at {bandwidth / 2**30:.1f} GiB/s",
        f"{text_weights / bandwidth * 1000:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--queries", type=int, default=100, help="single short text queries for p50/p99")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    images, texts = photos(args.images), captions(args.texts)

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = str(Path(folder) / "random-vit-b32.pt")
        save_state_dict(random_clip(VIT_B_32), checkpoint)
        model = ClipModel(checkpoint, args.device)
        in_process = in_process_rates(model, images, texts, batch=32)
        floor_rows = short_query_floor(model, args.queries)
        decoding_title, decoding_rows = camera_photo_decoding(model)
        pathological_rows = pathological_inputs(model.image_resolution)
        serve = ["--model", checkpoint, "--device", args.device, "--port", "0"]
        with (
            service("encoder_service", serve, "encoder serving") as (address, _),
            grpc.insecure_channel(address) as ch,
        ):
            stub = encoder_pb2_grpc.EncoderServiceStub(ch)
            info = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest())
            service_rates = {}
            for callers in CONCURRENCY:
                seconds, _ = run_concurrently(
                    callers,
                    len(images),
                    lambda i: stub.EncodeImages(encoder_pb2.EncodeImagesRequest(images=[images[i]])),
                )
                service_rates[("image", callers)] = len(images) / seconds
                seconds, _ = run_concurrently(
                    callers,
                    len(texts),
                    lambda i: stub.EncodeText(encoder_pb2.EncodeTextRequest(texts=[texts[i]])),
                )
                service_rates[("text", callers)] = len(texts) / seconds
            query = encoder_pb2.EncodeTextRequest(texts=["a white dog"])
            tokens = trimmed_tokens(tokenize(["a white dog"], model.context_length).tokens).to(model.device)
            latencies, alongside = lone_queries(
                lambda: stub.EncodeText(query), lambda: model.text_vectors(tokens).cpu(), args.queries
            )

    print(
        f"\nmodel: random ViT-B/32 on {info.device} ({info.dtype}); batch <= {info.max_batch_size}, "
        f"delay <= {info.max_batch_delay_ms} ms; {args.images} images (320x240 JPEG), {args.texts} texts"
    )
    rows = []
    for kind, unit in (("image", "images/s"), ("text", "texts/s")):
        ceiling, single = in_process[f"{kind} ceiling"], in_process[f"{kind} one-at-a-time"]
        for callers in CONCURRENCY:
            rate = service_rates[(kind, callers)]
            rows.append(
                [
                    f"{kind}: service, {callers} callers, 1 item/call",
                    f"{rate:.1f} {unit}",
                    f"{rate / ceiling:.2f}",
                    f"{rate / single:.2f}",
                ]
            )
        rows.append(
            [
                f"{kind}: in-process batches of 32 (ceiling)",
                f"{ceiling:.1f} {unit}",
                "1.00",
                f"{ceiling / single:.2f}",
            ]
        )
        rows.append(
            [
                f"{kind}: tutorial loop, one at a time",
                f"{single:.1f} {unit}",
                f"{single / ceiling:.2f}",
                "1.00",
            ]
        )
    print_table("Encoder throughput", ["what", "rate", "÷ ceiling", "÷ one-at-a-time"], rows)
    print_table(decoding_title, ["how", "ms", "speed-up"], decoding_rows)
    print_table(
        "Cheap inputs that cost the host, p50 of 3",
        ["input", "CLIP's own, ms", "the service, ms", "÷"],
        pathological_rows,
    )
    p50, p99 = percentiles_ms(latencies)
    beside, _ = percentiles_ms(alongside)
    print_table("One short text query in-process ('a white dog'), p50", ["how", "ms"], floor_rows)
    print_table(
        "Single short text query through the service ('a white dog'), in turns with the in-process forward",
        ["p50", "p99", "in-process trimmed forward, p50", "difference"],
        [[f"{p50:.1f} ms", f"{p99:.1f} ms", f"{beside:.1f} ms", f"{p50 - beside:.1f} ms"]],
    )


if __name__ == "__main__":
    sys.exit(main())

"""The encoder's fp16 CUDA path against its fp32 CPU path, on the same pictures and texts (needs a GPU).

    .venv/bin/python bench/fp16.py

For a random ViT-B/32 and the small CLIP: the lowest cosine between the two paths' vectors, the largest
deviation of a vector's length from 1, and how often a text's best picture is the same on both.
"""

import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from harness import print_table
from PIL import Image

from demo.run import SMALL_CLIP
from encoder_service.checkpoints import VIT_B_32, random_clip, save_state_dict
from encoder_service.images import clip_pixels
from encoder_service.model import ClipModel
from encoder_service.tokens import tokenize
from encoder_service.towers import trimmed_tokens
from synthetic.pictures import classes, render


def vectors(model: ClipModel, pixels: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image and text vectors as the encoder computes them, texts on their first L positions."""
    images = model.image_vectors(torch.from_numpy(pixels).to(model.device))
    texts = model.text_vectors(trimmed_tokens(tokens).to(model.device))
    return images.cpu().numpy(), texts.cpu().numpy()


def compare(checkpoint: str, jpegs: list[bytes], texts: list[str]) -> list[str]:
    cpu, gpu = ClipModel(checkpoint, "cpu"), ClipModel(checkpoint, "cuda")
    resolution = cpu.image_resolution
    pixels = np.stack(
        [clip_pixels(Image.open(io.BytesIO(data)).convert("RGB"), resolution) for data in jpegs]
    )
    tokens = tokenize(texts, cpu.context_length).tokens
    images, words = zip(*(vectors(model, pixels, tokens) for model in (cpu, gpu)), strict=True)
    best = [
        np.argmax(text_vectors @ image_vectors.T, axis=1)
        for text_vectors, image_vectors in zip(words, images, strict=True)
    ]
    lengths = np.linalg.norm(np.concatenate([images[1], words[1]]), axis=1)
    return [
        f"{np.min(np.sum(images[0] * images[1], axis=1)):.5f}",
        f"{np.min(np.sum(words[0] * words[1], axis=1)):.5f}",
        f"{np.max(np.abs(lengths - 1)):.1e}",
        f"{np.mean(best[0] == best[1]):.3f}",
    ]


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("bench/fp16.py compares the CUDA path with the CPU path: torch sees no CUDA device here")
    rng = np.random.default_rng(5)
    jpegs = [render(color, shape, rng).jpeg for color, shape in classes()]
    texts = [f"a photo of a {color} {shape}" for color, shape in classes()] + ["word " * 100]
    with tempfile.TemporaryDirectory() as folder:
        random_vit = str(Path(folder) / "random-vit-b32.pt")
        save_state_dict(random_clip(VIT_B_32), random_vit)
        rows = [
            [name, *compare(checkpoint, jpegs, texts)]
            for name, checkpoint in (("random ViT-B/32", random_vit), ("small CLIP", str(SMALL_CLIP)))
        ]
    title = f"fp16 on {torch.cuda.get_device_name()} against fp32 on the CPU"
    print_table(
        f"{title} ({len(jpegs)} pictures, {len(texts)} texts)",
        [
            "model",
            "image cosine, lowest",
            "text cosine, lowest",
            "vector length - 1, largest",
            "same best picture",
        ],
        rows,
    )


if __name__ == "__main__":
    main()

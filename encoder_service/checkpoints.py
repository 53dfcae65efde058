"""Checkpoints the project makes itself, for machines that cannot download OpenAI's weights.

`python -m encoder_service.checkpoints random-vit-b32 OUT.pt [--torchscript]` writes a randomly initialised
ViT-B/32: the exact architecture and cost of the real model, with meaningless vectors (plumbing, benchmarks).
`tiny` instead of `random-vit-b32` writes the same family at a fraction of the cost (tests).
"""

import argparse
from dataclasses import asdict, dataclass

import torch
from clip.model import CLIP, convert_weights


@dataclass(frozen=True)
class ClipShape:
    embed_dim: int
    image_resolution: int
    vision_layers: int
    vision_width: int
    vision_patch_size: int
    context_length: int
    vocab_size: int
    transformer_width: int
    transformer_heads: int
    transformer_layers: int


VIT_B_32 = ClipShape(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12)
# The same family at a fraction of the cost, still 512-d, for tests where only speed matters.
TINY = ClipShape(512, 32, 2, 64, 8, 77, 49408, 64, 1, 2)
# The small CLIP trained on synthetic pictures (models/train_small_clip.py). Heads are width // 64, as
# clip.model.build_model infers them when it loads a state dict.
SMALL = ClipShape(512, 64, 4, 128, 8, 77, 49408, 64, 1, 3)


def random_clip(shape: ClipShape, seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    model = CLIP(**asdict(shape)).eval()
    convert_weights(model)  # fp16, as OpenAI ships its weights
    return model


def save_state_dict(model: CLIP, path: str) -> None:
    torch.save(model.state_dict(), path)


def save_torchscript(model: CLIP, path: str) -> None:
    """A TorchScript archive with `encode_image` and `encode_text`, like OpenAI's released files."""
    model = model.float()
    resolution = model.visual.input_resolution
    traced = torch.jit.trace_module(
        model,
        {
            "forward": (
                torch.zeros(1, 3, resolution, resolution),
                torch.zeros(1, model.context_length).long(),
            ),
            "encode_image": torch.zeros(1, 3, resolution, resolution),
            "encode_text": torch.zeros(1, model.context_length, dtype=torch.long),
        },
        check_trace=False,
    )
    torch.jit.save(traced, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m encoder_service.checkpoints",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=["random-vit-b32", "tiny"])
    parser.add_argument("out", help="where to write the checkpoint")
    parser.add_argument("--torchscript", action="store_true", help="write a TorchScript archive")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = random_clip(VIT_B_32 if args.kind == "random-vit-b32" else TINY, args.seed)
    (save_torchscript if args.torchscript else save_state_dict)(model, args.out)
    form = "a TorchScript archive" if args.torchscript else "a state dict"
    print(f"wrote {args.out}: {form} of a {args.kind} CLIP with random weights (seed {args.seed})")


if __name__ == "__main__":
    main()

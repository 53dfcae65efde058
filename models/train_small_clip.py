"""Trains the small CLIP on synthetic pictures, on the CPU, reproducibly from its seed.

    .venv/bin/python models/train_small_clip.py --out demo/small-clip-synthetic.pt

The model is `clip.model.CLIP` (512-d vectors, CLIP's tokenizer, 64x64 input, patch 8), so the encoder loads
it through the same `--model PATH` code as OpenAI's checkpoints. The loss is CLIP's symmetric contrastive
loss, except that two pairs in a batch with the same label are both counted as matches: with 48 labels, a
batch holds many pictures of "a red circle", and calling all but one of them wrong would teach noise. The
same loss between the batch's pictures teaches image -> image search; each batch holds 3 pictures of each of
the 48 labels, so every picture has matches in it and every label is told apart from all others. Pictures
are turned and mirrored at random as they are drawn. See models/README.md for what each choice was worth.
"""

import argparse
import hashlib
import io
import math
import time

import clip
import numpy as np
import torch
import torch.nn.functional as F
from clip.model import CLIP, convert_weights
from PIL import Image

from encoder_service.checkpoints import SMALL
from encoder_service.preprocess import clip_transform
from synthetic.pictures import Picture, caption, classes, render_set

TRAIN_SEED = 0  # the pictures of the quality checks use other seeds


def preprocess_all(pictures: list[Picture], resolution: int) -> torch.Tensor:
    transform = clip_transform(resolution)
    return torch.stack([transform(Image.open(io.BytesIO(p.jpeg)).convert("RGB")) for p in pictures])


def turned_or_mirrored(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each picture turned by a random multiple of 90 degrees and perhaps mirrored. Shapes and colours keep
    their names under these, so the training set grows eightfold at no rendering cost."""
    turns = rng.integers(4, size=len(images))
    mirrors = rng.integers(2, size=len(images))
    result = []
    for image, turn, mirror in zip(images, turns, mirrors, strict=True):
        turned = torch.rot90(image, int(turn), dims=(1, 2))
        result.append(turned.flip(2) if mirror else turned)
    return torch.stack(result)


def contrastive_loss(
    model: CLIP, images: torch.Tensor, tokens: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    image_features = F.normalize(model.encode_image(images), dim=-1)
    text_features = F.normalize(model.encode_text(tokens), dim=-1)
    scale = model.logit_scale.exp()
    logits = scale * image_features @ text_features.t()
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    text_image = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
    # Pictures of the same label should also find each other (image -> image search): the same loss
    # between the pictures of the batch, each picture's own pair left out.
    itself = torch.eye(len(labels), dtype=torch.bool)
    others = same.masked_fill(itself, 0)
    has_twin = others.sum(dim=1) > 0
    # A large negative, not -inf: soft-target cross-entropy multiplies it by a zero target.
    image_logits = (scale * image_features @ image_features.t()).masked_fill(itself, -1e4)
    image_targets = others[has_twin] / others[has_twin].sum(dim=1, keepdim=True)
    image_image = F.cross_entropy(image_logits[has_twin], image_targets)
    return text_image + image_image


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--per-class", type=int, default=300, help="training pictures of each colour x shape")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--labels-per-batch", type=int, default=48, help="labels in each batch")
    parser.add_argument("--pictures-per-label", type=int, default=3, help="pictures of each label in a batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started = time.time()

    pictures = render_set(args.per_class, TRAIN_SEED)
    images = preprocess_all(pictures, SMALL.image_resolution)
    label_of = {pair: index for index, pair in enumerate(classes())}
    labels = torch.tensor([label_of[(p.color, p.shape)] for p in pictures])
    # Batches of a few labels with several pictures each: every picture has matches to learn from.
    by_label = [np.flatnonzero(labels.numpy() == label) for label in range(len(label_of))]
    print(f"rendered {len(pictures)} pictures in {time.time() - started:.0f} s", flush=True)

    model = CLIP(**vars(SMALL)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    warmup = args.steps // 20

    def learning_rate_factor(step: int) -> float:
        """Linear warm-up, then cosine decay to zero."""
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step / args.steps, 1.0)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor)
    for step in range(args.steps):
        batch = torch.from_numpy(
            np.concatenate(
                [
                    rng.choice(by_label[label], args.pictures_per_label, replace=False)
                    for label in rng.choice(len(by_label), args.labels_per_batch, replace=False)
                ]
            )
        )
        tokens = clip.tokenize([caption(pictures[i], rng) for i in batch.tolist()])
        loss = contrastive_loss(model, turned_or_mirrored(images[batch], rng), tokens, labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - started:.0f} s", flush=True)

    model.eval()
    convert_weights(model)  # fp16, as OpenAI ships its checkpoints
    # Saved through a file object, the archive's inner folder is "archive" whatever --out is called, so the
    # same weights always make the same bytes and the same sha256.
    with open(args.out, "wb") as file:
        torch.save(model.state_dict(), file)
    with open(args.out, "rb") as file:
        digest = hashlib.sha256(file.read()).hexdigest()
    print(f"wrote {args.out}: sha256 {digest}, {time.time() - started:.0f} s in all")


if __name__ == "__main__":
    main()

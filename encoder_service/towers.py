"""The two towers' work: inputs prepared for the device, batches through a forward pass (graph or eager),
vectors back. Each tower's batches run on one thread, its batcher's."""

import contextlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch

from .graphs import GraphedForward
from .images import DeviceJpeg, ImageLimits, ImageRejected, RejectedImage, jpeg_for_device
from .model import ClipModel
from .preprocess import decode_on_device
from .workers import WorkerPool

# What the image batcher queues: pixels from a worker process, or pixels already on the device.
ImagePixels = np.ndarray | torch.Tensor


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`host` on `device`; on CUDA through pinned memory, so that the copy runs without the host waiting."""
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


class Turn:
    """Where a tower's work runs. On CUDA, all of it (from any thread) on the tower's own stream, so that
    the towers run at once and a tensor is only ever used on the stream that made it. On the CPU, one tower's
    forward pass at a time, since one pass already uses every core."""

    def __init__(self, device: torch.device, cpu: threading.Lock) -> None:
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._cpu: AbstractContextManager = cpu if device.type == "cpu" else contextlib.nullcontext()

    def on_device(self) -> AbstractContextManager:
        return torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def forward_pass(self) -> Iterator[None]:
        with self._cpu, self.on_device(), torch.inference_mode():
            yield


def trimmed_tokens(tokens: np.ndarray) -> torch.Tensor:
    """A batch of token rows cut to its first L positions (L: the longest text's, up to its end-of-text token,
    which has the largest id): the causal text tower gives the same vectors for a fraction of the work."""
    length = int(tokens.argmax(axis=1).max()) + 1
    return torch.from_numpy(np.ascontiguousarray(tokens[:, :length]))


class TextTower:
    def __init__(self, model: ClipModel, forward: GraphedForward, turn: Turn) -> None:
        self.model = model
        self.forward = forward
        self.turn = turn

    def run(self, rows: list[np.ndarray]) -> list[np.ndarray]:
        """Token rows (context_length,) -> unit vectors, run on the first L positions (L: longest text)."""
        with self.turn.forward_pass():
            trimmed = trimmed_tokens(np.stack(rows))
            return list(self.forward(to_device(trimmed, self.model.device)).cpu().numpy())


class ImageTower:
    """Pictures are decoded by the worker processes, except the JPEGs that the device decodes (nvJPEG, in the
    request's thread, while the GPU runs other requests' forward passes)."""

    def __init__(
        self,
        model: ClipModel,
        forward: GraphedForward,
        workers: WorkerPool,
        limits: ImageLimits,
        jpegs_on_device: bool,
        turn: Turn,
    ) -> None:
        self.model = model
        self.forward = forward
        self.workers = workers
        self.limits = limits
        self.jpegs_on_device = jpegs_on_device
        self.turn = turn

    def prepare(self, images: Sequence[bytes]) -> list[ImagePixels | RejectedImage]:
        """Each image's pixels for the batcher, or why it cannot be encoded."""
        if not self.jpegs_on_device:
            return list(self.workers.decode(images))
        prepared: list = [self._route(data) for data in images]
        jpegs = [index for index, item in enumerate(prepared) if isinstance(item, DeviceJpeg)]
        resolution = self.model.image_resolution
        with self.turn.on_device(), torch.inference_mode():
            decoded = decode_on_device([prepared[i] for i in jpegs], self.model.device, resolution)
        for index, pixels in zip(jpegs, decoded, strict=True):
            # A JPEG whose decoding call failed goes to the workers, which decode it or say why not.
            prepared[index] = prepared[index].data if pixels is None else pixels
        left = [index for index, item in enumerate(prepared) if isinstance(item, bytes)]
        for index, outcome in zip(left, self.workers.decode([prepared[i] for i in left]), strict=True):
            prepared[index] = outcome
        return prepared

    def _route(self, data: bytes) -> DeviceJpeg | bytes | RejectedImage:
        """A JPEG for the device, the bytes of any other picture for the workers, or a header's rejection."""
        try:
            return jpeg_for_device(data, self.limits) or data
        except ImageRejected as rejection:
            return RejectedImage(str(rejection))

    def run(self, pictures: list[ImagePixels]) -> list[np.ndarray]:
        """Pictures' pixels -> unit vectors."""
        resolution, device = self.model.image_resolution, self.model.device
        with self.turn.forward_pass():
            batch = torch.empty((len(pictures), resolution, resolution, 3), dtype=torch.uint8, device=device)
            host = [index for index, picture in enumerate(pictures) if isinstance(picture, np.ndarray)]
            there = [index for index, picture in enumerate(pictures) if isinstance(picture, torch.Tensor)]
            if host:
                # Stacked straight into pinned memory on CUDA: one copy on the host, and none waited for.
                stacked = torch.empty(
                    (len(host), resolution, resolution, 3),
                    dtype=torch.uint8,
                    pin_memory=device.type == "cuda",
                )
                np.stack([pictures[index] for index in host], out=stacked.numpy())
                batch[host] = stacked.to(device, non_blocking=True)
            if there:
                batch[there] = torch.stack([pictures[index] for index in there])
            return list(self.forward(batch).cpu().numpy())

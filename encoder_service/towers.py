"""The two towers' work: inputs prepared for the device, batches through a forward pass (graph or eager),
vectors back. On CUDA each tower's batches run on its batcher's thread; on the CPU, on the one CPU thread."""

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from .batcher import DynamicBatcher
from .graphs import GraphedForward
from .images import DeviceJpeg, ImageLimits, RejectedImage, UnencodableImage, jpeg_for_device
from .model import ClipModel
from .preprocess import decode_on_device
from .workers import WhenCallEnds, WorkerPool

# What the image batcher queues: pixels from a worker process, or pixels already on the device.
ImagePixels = np.ndarray | torch.Tensor


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`host` on `device`; on CUDA through pinned memory, so that the copy runs without the host waiting."""
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


Result = TypeVar("Result")


def _inferring(work: Callable[[], Result]) -> Result:
    with torch.inference_mode():  # a thread's own setting: entered by the thread that does the work
        return work()


class CpuThread:
    """The one thread that runs torch's work on the CPU: loading the model, forward passes and decoding.

    torch's OpenMP keeps a team of threads for every thread that runs parallel work, and once the teams hold
    more threads than there are cores, they sleep between operations instead of spinning: a short query's
    pass of the small CLIP took 2.5 ms instead of 0.5 on 2 cores when the towers' two threads (and the one
    that loaded the model) had teams of their own. One thread keeps one team, and runs one pass at a time,
    which is all the CPU can do anyway: one pass already uses every core."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="torch-cpu")

    def run(self, work: Callable[[], Result]) -> Result:
        return self._executor.submit(_inferring, work).result()

    def close(self) -> None:
        self._executor.shutdown()


class Turn:
    """Where a stream of work runs: on CUDA, in the calling thread and on a stream of its own (each tower has
    one, so that the towers run at once); on the CPU, on the CPU thread."""

    def __init__(self, device: torch.device, cpu: CpuThread) -> None:
        # High priority: such streams come from a pool of their own, so that none is the one torchvision's
        # nvJPEG decoder takes from the usual pool, which would make decoding and forward passes wait in turn.
        self._stream = torch.cuda.Stream(device, priority=-1) if device.type == "cuda" else None
        self._cpu = cpu

    def run(self, work: Callable[[], Result]) -> Result:
        if self._stream is None:
            return self._cpu.run(work)
        with torch.cuda.stream(self._stream):
            return _inferring(work)

    def finish(self) -> None:
        """Waits until the device has done what was queued on this turn's stream."""
        if self._stream is not None:
            self._stream.synchronize()


class JpegDecoding:
    """JPEGs decoded on the device by one thread, one call at a time, on a stream of its own that each call
    leaves idle; the JPEGs of requests that arrive while a call runs go together into the next one.

    One at a time, because torchvision's nvJPEG decoding takes its output memory from the calling stream but
    writes it from a private stream that does not wait for the calling stream's queued kernels
    (pytorch/vision#9606): memory freed on a busy stream, and still to be read by a kernel queued there, could
    be overwritten. So nothing else runs on this stream, the stream is drained before every decoding call
    (decode_on_device), and each call waits for its pixels before they go to a forward pass on another
    stream. Together, because nvJPEG decodes a batch several times faster per picture than one at a time
    (4.5x for 100 pictures on an A100 in torchvision's own benchmark, pytorch/vision#8496)."""

    def __init__(
        self, device: torch.device, resolution: int, cpu: CpuThread, max_batch_size: int, max_queue_size: int
    ) -> None:
        self.device = device
        self.resolution = resolution
        self._turn = Turn(device, cpu)
        # No delay: a call takes whatever has arrived by the time the last one ends.
        self._calls: DynamicBatcher[DeviceJpeg, torch.Tensor | None] = DynamicBatcher(
            "jpeg", self._decode, max_batch_size, 0.0, max_queue_size
        )

    def _decode(self, jpegs: list[DeviceJpeg]) -> list[torch.Tensor | None]:
        decoded = self._turn.run(lambda: decode_on_device(jpegs, self.device, self.resolution))
        self._turn.finish()
        return decoded

    def __call__(self, jpegs: Sequence[DeviceJpeg]) -> list[torch.Tensor | None]:
        """Each JPEG's (res, res, 3) uint8 pixels on the device, or None where the decoder failed."""
        return self._calls.submit(jpegs).result()

    def close(self) -> None:
        self._calls.close()


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
        trimmed = trimmed_tokens(np.stack(rows))
        return self.turn.run(lambda: list(self.forward(to_device(trimmed, self.model.device)).cpu().numpy()))


class ImageTower:
    """Pictures are decoded by the worker processes, except the JPEGs that `jpegs`, where given, decodes on
    the device (nvJPEG, on its own thread and stream, while the GPU runs other requests' forward passes)."""

    def __init__(
        self,
        model: ClipModel,
        forward: GraphedForward,
        workers: WorkerPool,
        limits: ImageLimits,
        jpegs: JpegDecoding | None,
        turn: Turn,
    ) -> None:
        self.model = model
        self.forward = forward
        self.workers = workers
        self.limits = limits
        self.jpegs = jpegs
        self.turn = turn

    def prepare(
        self, images: Sequence[bytes], when_call_ends: WhenCallEnds | None = None
    ) -> list[ImagePixels | RejectedImage]:
        """Each image's pixels for the batcher, or why it cannot be encoded."""
        if self.jpegs is None:
            return list(self.workers.decode(images, when_call_ends))
        prepared: list = [self._route(data) for data in images]
        jpegs = [index for index, item in enumerate(prepared) if isinstance(item, DeviceJpeg)]
        decoded = self.jpegs([prepared[i] for i in jpegs])
        for index, pixels in zip(jpegs, decoded, strict=True):
            # A JPEG whose decoding call failed goes to the workers, which decode it or say why not.
            prepared[index] = prepared[index].data if pixels is None else pixels
        left = [index for index, item in enumerate(prepared) if isinstance(item, bytes)]
        decoded_here = self.workers.decode([prepared[i] for i in left], when_call_ends)
        for index, outcome in zip(left, decoded_here, strict=True):
            prepared[index] = outcome
        return prepared

    def _route(self, data: bytes) -> DeviceJpeg | bytes | RejectedImage:
        """A JPEG for the device, the bytes of any other picture for the workers, or a header's rejection."""
        try:
            return jpeg_for_device(data, self.limits) or data
        except UnencodableImage as rejection:
            return RejectedImage(str(rejection))

    def run(self, pictures: list[ImagePixels]) -> list[np.ndarray]:
        """Pictures' pixels -> unit vectors."""
        return self.turn.run(lambda: self._vectors(pictures))

    def _vectors(self, pictures: list[ImagePixels]) -> list[np.ndarray]:
        resolution, device = self.model.image_resolution, self.model.device
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
            on_device = [pictures[index] for index in there]
            if device.type == "cuda":
                # Made on the decoding stream: their memory must not go back to it before this pass has read
                # them.
                for picture in on_device:
                    picture.record_stream(torch.cuda.current_stream(device))
            batch[there] = torch.stack(on_device)
        return list(self.forward(batch).cpu().numpy())

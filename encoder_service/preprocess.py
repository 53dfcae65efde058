"""CLIP's preprocessing: its own transform as the standard, and the same steps as tensor operations.

`clip_transform` is the one place our code reaches CLIP's preprocessing: tests and benchmarks compare with it,
and its Normalize gives the encoder its mean and std. The resize and centre crop run in PIL in the worker
processes (`images.clip_pixels`, equal pixel for pixel), or, for JPEGs decoded on the GPU, as the tensor
operations below; both hand over uint8 pixels, and `ModelInput` turns them into CLIP's input on the device.
Every function here runs on the CPU too, which is how CI tests the GPU's path.
"""

import contextlib
import logging
import warnings
from collections import defaultdict
from collections.abc import Sequence

import clip
import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import Compose, Normalize

from .images import DeviceJpeg, centre_crop_offsets, resized_size

log = logging.getLogger(__name__)

# torchvision 0.29 deprecates its JPEG decoding for TorchCodec's; it still decodes (0.26 does not warn).
warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision.io.image")

# Decoded pixels held on the device at once: a batch of camera-sized photos is decoded a part at a time.
_PIXELS_PER_DECODING_CALL = 1 << 26
# A batch's decoding calls that may fail while its bad JPEGs are looked for (_decoded_apart): one bad JPEG in
# a batch of 256 takes 9 (its call, then the half holding it, down to itself), four take at most 31; past
# these, at most the depth of the halving (8) more fail.
_FAILED_CALLS_PER_BATCH = 32


def clip_transform(resolution: int) -> Compose:
    """CLIP's own preprocessing for a model of that input size (resize, centre crop, RGB, to tensor,
    normalise): PIL picture -> (3, resolution, resolution) float32."""
    return clip.clip._transform(resolution)


class ModelInput:
    """(n, res, res, 3) uint8 pixels -> (n, 3, res, res) CLIP input on their device: CLIP's ToTensor and
    Normalize as the same float32 operations. The mean and std are put on the device once, up front: a CUDA
    graph may not copy from the host while it is captured."""

    def __init__(self, resolution: int, device: torch.device, dtype: torch.dtype) -> None:
        normalize = clip_transform(resolution).transforms[-1]
        assert isinstance(normalize, Normalize)
        self.mean = torch.tensor(normalize.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(normalize.std, device=device).view(1, 3, 1, 1)
        self.dtype = dtype

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.permute(0, 3, 1, 2).float().div(255).sub(self.mean).div(self.std).to(self.dtype)


def oriented(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """A (channels, height, width) picture turned as EXIF orientation 1-8 says, as PIL's exif_transpose."""
    rows, columns = -2, -1
    turns = {
        2: lambda x: x.flip(columns),
        3: lambda x: x.flip(rows, columns),
        4: lambda x: x.flip(rows),
        5: lambda x: x.transpose(rows, columns),
        6: lambda x: x.rot90(-1, (rows, columns)),
        7: lambda x: x.transpose(rows, columns).flip(rows, columns),
        8: lambda x: x.rot90(1, (rows, columns)),
    }
    return turns[orientation](image) if orientation in turns else image


def resized_and_cropped(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """(n, 3, height, width) uint8 pictures of one size -> (n, res, res, 3) uint8: CLIP's bicubic resize
    (antialiased, as PIL's) and centre crop."""
    height, width = images.shape[-2:]
    new_width, new_height = resized_size(width, height, resolution)
    resized = torch.nn.functional.interpolate(
        images.float(), size=(new_height, new_width), mode="bicubic", align_corners=False, antialias=True
    )
    left, top = centre_crop_offsets(new_width, new_height, resolution)
    cropped = resized[:, :, top : top + resolution, left : left + resolution]
    # PIL rounds each resized pixel to 8 bits, and so does this.
    return cropped.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def _decoded_pixels(jpegs: Sequence[DeviceJpeg], device: torch.device, resolution: int) -> list[torch.Tensor]:
    encoded = [torch.frombuffer(bytearray(jpeg.data), dtype=torch.uint8) for jpeg in jpegs]
    if device.type == "cuda":
        # nvJPEG writes into memory from this stream without waiting for it (towers.JpegDecoding): drained,
        # the stream has no queued kernel left to read memory that the decoder may be given.
        torch.cuda.current_stream(device).synchronize()
    decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    pictures = [oriented(image, jpeg.orientation) for image, jpeg in zip(decoded, jpegs, strict=True)]
    # Pictures of one size are resized together: one call for a whole batch of camera photos.
    by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for index, picture in enumerate(pictures):
        by_size[tuple(picture.shape)].append(index)
    pixels: list[torch.Tensor] = [torch.empty(0)] * len(pictures)
    for indices in by_size.values():
        resized = resized_and_cropped(torch.stack([pictures[index] for index in indices]), resolution)
        for index, picture in zip(indices, resized, strict=True):
            pixels[index] = picture
    return pixels


def decode_on_device(
    jpegs: Sequence[DeviceJpeg],
    device: torch.device,
    resolution: int,
    pixels_per_call: int = _PIXELS_PER_DECODING_CALL,
) -> list[torch.Tensor | None]:
    """Each JPEG as CLIP's (res, res, 3) uint8 input pixels on `device`: decoded there (nvJPEG on CUDA,
    libjpeg on the CPU), oriented, resized and cropped. None for a JPEG the device did not decode (it failed,
    or was in a failed call that was not split: see _decoded_apart), which the PIL path then decodes or says
    why not."""
    outcomes: list[torch.Tensor | None] = []
    failures: list[RuntimeError] = []
    start = 0
    while start < len(jpegs):
        end, pixels = start + 1, jpegs[start].pixels
        while end < len(jpegs) and pixels + jpegs[end].pixels <= pixels_per_call:
            pixels += jpegs[end].pixels
            end += 1
        outcomes.extend(_decoded_apart(jpegs[start:end], device, resolution, failures))
        start = end
    if failures:
        # Said, so that a decoder failing for every call (a driver, a build without nvJPEG) is seen, not only
        # paid for in throughput by the PIL path taking all the JPEGs.
        log.warning(
            "decoding %d of %d JPEG(s) on %s failed (%d failed call(s)), the PIL path decodes them: %s",
            outcomes.count(None),
            len(jpegs),
            device,
            len(failures),
            failures[0],
        )
    return outcomes


def _decoded_apart(
    jpegs: Sequence[DeviceJpeg], device: torch.device, resolution: int, failures: list[RuntimeError]
) -> list[torch.Tensor | None]:
    """The JPEGs decoded in one call. nvJPEG decodes nothing of a call in which one JPEG is bad, so a failed
    call is tried again in halves, each the same way, down to the JPEGs that fail alone: the good ones of a
    batch stay on the device. Once `failures` (this batch's failed calls) holds _FAILED_CALLS_PER_BATCH, a
    call that fails is no longer split (the halves still waiting are each tried once, whole): a batch of many
    bad JPEGs, or a decoder that fails every call, costs a bounded number of calls."""
    try:
        return _decoded_pixels(jpegs, device, resolution)
    except RuntimeError as error:
        failures.append(error)
        if device.type == "cuda":
            # torchvision raises before it waits for the decoder's private stream, which may still be writing
            # into memory that now goes back to this stream's allocator. The wait may raise the device's own
            # error in turn: the PIL path decodes these JPEGs all the same.
            with contextlib.suppress(RuntimeError):
                torch.cuda.synchronize(device)
    if len(jpegs) == 1 or len(failures) >= _FAILED_CALLS_PER_BATCH:
        return [None] * len(jpegs)
    half = len(jpegs) // 2
    return [
        *_decoded_apart(jpegs[:half], device, resolution, failures),
        *_decoded_apart(jpegs[half:], device, resolution, failures),
    ]

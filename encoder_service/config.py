"""The encoder's settings, from flags with environment-variable twins (ENCODER_*).

Sizes left to the device (0, or -1 for the query cache) are decided by `resolved_for`: on the CPU as they have
always been, on CUDA for a GPU that encodes thousands of pictures a second and a host with many cores.
"""

import dataclasses
from dataclasses import dataclass

import torch

from imagesearch.cores import available_cores
from imagesearch.defaults import (
    DEFAULT_MODEL,
    ENCODER_METRICS_PORT,
    ENCODER_PORT,
    GRPC_LARGEST_MESSAGE,
    MAX_IMAGE_PIXELS,
)
from imagesearch.flags import parse_config, require_at_least, require_at_most, require_seconds, setting
from imagesearch.serving import ServerSettings

_SIZED_FOR_THE_DEVICE = ["grpc_workers", "max_batch_size", "max_queue_size", "decode_workers"]
_REQUEST_ROOM = 1 << 20  # what a request holds beside its images
_LARGEST_INT32 = 2**31 - 1  # GetModelInfo reports the sizes as int32: a larger one failed every call of it
# A much longer wait overflowed the batcher's timer and stopped its thread; no batch pays off after an hour.
_LONGEST_BATCH_DELAY_MS = 3_600_000
# A day; from about 25 days on, the wait for a worker's answer overflowed and every call failed.
_LONGEST_DECODE_S = 86_400


@dataclass(frozen=True)
class EncoderConfig(ServerSettings):
    model: str = setting(
        DEFAULT_MODEL, "a clip.available_models() name (downloaded once) or a TorchScript or state-dict file"
    )
    model_cache: str = setting("", "folder where named models are downloaded (empty: clip's ~/.cache/clip)")
    device: str = setting("auto", "CUDA when present (auto), or the CPU", ["auto", "cpu", "cuda"])
    precision: str = setting(
        "auto", "fp16 on CUDA and fp32 on the CPU (auto), or either on both", ["auto", "fp16", "fp32"]
    )
    port: int = setting(ENCODER_PORT, "port to listen on (0: any free port)")
    grpc_workers: int = setting(0, "threads serving calls (0: 64, or 128 on CUDA)")
    max_batch_size: int = setting(0, "most items in one forward pass (0: 32, or 256 on CUDA)")
    max_batch_delay_ms: int = setting(
        5, "longest wait for requests still being prepared before a forward pass (a lone request never waits)"
    )
    max_queue_size: int = setting(
        0, "items waiting per tower before calls get RESOURCE_EXHAUSTED (0: 512, or 2048 on CUDA)"
    )
    max_items_per_request: int = setting(64, "most texts or images in one call")
    max_image_bytes: int = setting(20 * 1024 * 1024, "largest image file accepted")
    max_image_pixels: int = setting(MAX_IMAGE_PIXELS, "largest width x height accepted (decompression bombs)")
    max_text_chars: int = setting(
        4096, "characters of a text that are tokenised; the rest is cut and flagged"
    )
    decode_workers: int = setting(
        0,
        "processes that decode images and tokenise long requests (0: 4; on CUDA half the cores, 4 to 16)",
    )
    decode_timeout_s: float = setting(
        30.0,
        "longest a decode worker may take on one picture (or one share of a request's texts): past it, the "
        "worker is stopped and replaced, and that item fails",
    )
    jpeg_decoding: str = setting(
        "auto",
        "where JPEGs are decoded: on the device (nvJPEG) or in the processes; auto: the device on CUDA",
        ["auto", "device", "processes"],
    )
    text_cache_size: int = setting(
        -1, "recent query vectors kept, by model and text (0: none; -1: 4096 on CUDA, none on the CPU)"
    )
    metrics_port: int = setting(
        ENCODER_METRICS_PORT, "port of the Prometheus /metrics page (0: any free port, -1: none)"
    )

    def __post_init__(self) -> None:
        self.check_serving()
        require_at_least(
            self, ["max_items_per_request", "max_image_bytes", "max_image_pixels", "max_text_chars"]
        )
        # A picture travels in one gRPC message, and gRPC's ceiling is 2 GiB with the rest of the request.
        require_at_most(self, ["max_image_bytes"], GRPC_LARGEST_MESSAGE - _REQUEST_ROOM)
        require_at_least(self, ["text_cache_size"], -1)
        require_seconds(self, ["decode_timeout_s"])
        require_at_most(self, ["decode_timeout_s"], _LONGEST_DECODE_S)
        require_at_least(self, [*_SIZED_FOR_THE_DEVICE, "max_batch_delay_ms"], 0)
        sizes = [*_SIZED_FOR_THE_DEVICE, "max_items_per_request", "text_cache_size"]
        require_at_most(self, sizes, _LARGEST_INT32)
        require_at_most(self, ["max_batch_delay_ms"], _LONGEST_BATCH_DELAY_MS)
        if 0 < self.max_queue_size < self.max_items_per_request:
            raise ValueError(
                f"max_items_per_request ({self.max_items_per_request}) must not exceed "
                f"max_queue_size ({self.max_queue_size}): such a request could never be queued"
            )

    def resolved_for(self, device: torch.device) -> "EncoderConfig":
        """These settings with every size left to the device decided for `device`."""
        if device.type == "cuda":
            sizes = {
                "grpc_workers": 128,
                "max_batch_size": 256,
                "max_queue_size": 2048,
                "decode_workers": max(4, min(16, available_cores() // 2)),
            }
        else:
            sizes = {"grpc_workers": 64, "max_batch_size": 32, "max_queue_size": 512, "decode_workers": 4}
        chosen = {name: size for name, size in sizes.items() if getattr(self, name) == 0}
        if self.text_cache_size == -1:
            chosen["text_cache_size"] = 4096 if device.type == "cuda" else 0
        if self.jpeg_decoding == "auto":
            chosen["jpeg_decoding"] = "device" if device.type == "cuda" else "processes"
        return dataclasses.replace(self, **chosen)

    @property
    def max_message_bytes(self) -> int:
        """Room for a full request of the largest images, within gRPC's 2 GiB ceiling."""
        return min(self.max_items_per_request * self.max_image_bytes + _REQUEST_ROOM, GRPC_LARGEST_MESSAGE)


def parse_args(argv: list[str] | None = None) -> EncoderConfig:
    return parse_config(
        EncoderConfig,
        "python -m encoder_service",
        "CLIP encoder over gRPC with dynamic batching.",
        "ENCODER_",
        argv,
    )

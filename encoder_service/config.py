"""The encoder's settings, from flags with environment-variable twins."""

from dataclasses import dataclass

from imagesearch.flags import parse_config

from .model import DEFAULT_MODEL


@dataclass(frozen=True)
class EncoderConfig:
    model: str = DEFAULT_MODEL
    model_cache: str = ""
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 50051
    max_batch_size: int = 32
    max_batch_delay_ms: int = 5
    max_queue_size: int = 512
    max_items_per_request: int = 64
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 64_000_000
    max_text_chars: int = 4096
    decode_workers: int = 4
    grpc_workers: int = 64
    shutdown_grace_s: float = 30.0

    def __post_init__(self) -> None:
        positive = {
            "max_batch_size": self.max_batch_size,
            "max_queue_size": self.max_queue_size,
            "max_items_per_request": self.max_items_per_request,
            "max_image_bytes": self.max_image_bytes,
            "max_image_pixels": self.max_image_pixels,
            "max_text_chars": self.max_text_chars,
            "decode_workers": self.decode_workers,
            "grpc_workers": self.grpc_workers,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if self.max_batch_delay_ms < 0:
            raise ValueError(f"max_batch_delay_ms must be 0 or more, not {self.max_batch_delay_ms}")
        if self.max_items_per_request > self.max_queue_size:
            raise ValueError(
                f"max_items_per_request ({self.max_items_per_request}) must not exceed "
                f"max_queue_size ({self.max_queue_size}): such a request could never be queued"
            )

    @property
    def max_message_bytes(self) -> int:
        """Room for a full request of the largest images, within gRPC's 2 GiB ceiling."""
        return min(self.max_items_per_request * self.max_image_bytes + (1 << 20), 2**31 - 1)


_HELPS = {
    "model": "a clip.available_models() name (downloaded once) or a TorchScript or state-dict file",
    "model_cache": "folder where named models are downloaded (clip's default: ~/.cache/clip)",
    "device": "where to run: CUDA in fp16 when present (auto), or the CPU in fp32",
    "host": "address to listen on",
    "port": "port to listen on (0: any free port)",
    "max_batch_size": "most items in one forward pass",
    "max_batch_delay_ms": "longest wait for more items before a forward pass",
    "max_queue_size": "items waiting per tower before calls get RESOURCE_EXHAUSTED",
    "max_items_per_request": "most texts or images in one call",
    "max_image_bytes": "largest image file accepted",
    "max_image_pixels": "largest width x height accepted (decompression bombs)",
    "max_text_chars": "characters of a text that are tokenised; the rest is cut and reported as truncated",
    "decode_workers": "threads that decode and preprocess images",
    "grpc_workers": "threads serving calls",
    "shutdown_grace_s": "how long in-flight calls may run after SIGTERM",
}


def parse_args(argv: list[str] | None = None) -> EncoderConfig:
    return parse_config(
        EncoderConfig,
        "python -m encoder_service",
        "CLIP encoder over gRPC with dynamic batching.",
        "ENCODER_",
        _HELPS,
        {"device": ["auto", "cpu", "cuda"]},
        argv,
    )

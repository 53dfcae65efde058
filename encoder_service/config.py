"""The encoder's settings, from flags with environment-variable twins (ENCODER_*)."""

from dataclasses import dataclass

from imagesearch.defaults import ENCODER_METRICS_PORT, ENCODER_PORT
from imagesearch.flags import parse_config, require_at_least_one, setting
from imagesearch.serving import ServerSettings

from .model import DEFAULT_MODEL


@dataclass(frozen=True)
class EncoderConfig(ServerSettings):
    model: str = setting(
        DEFAULT_MODEL, "a clip.available_models() name (downloaded once) or a TorchScript or state-dict file"
    )
    model_cache: str = setting("", "folder where named models are downloaded (empty: clip's ~/.cache/clip)")
    device: str = setting("auto", "CUDA when present (auto), or the CPU", None, ["auto", "cpu", "cuda"])
    precision: str = setting(
        "auto", "fp16 on CUDA and fp32 on the CPU (auto), or either on both", None, ["auto", "fp16", "fp32"]
    )
    port: int = setting(ENCODER_PORT, "port to listen on (0: any free port)")
    grpc_workers: int = setting(64, "threads serving calls")
    max_batch_size: int = setting(32, "most items in one forward pass")
    max_batch_delay_ms: int = setting(5, "longest wait for more items before a forward pass")
    max_queue_size: int = setting(512, "items waiting per tower before calls get RESOURCE_EXHAUSTED")
    max_items_per_request: int = setting(64, "most texts or images in one call")
    max_image_bytes: int = setting(20 * 1024 * 1024, "largest image file accepted")
    max_image_pixels: int = setting(64_000_000, "largest width x height accepted (decompression bombs)")
    max_text_chars: int = setting(
        4096, "characters of a text that are tokenised; the rest is cut and flagged"
    )
    decode_workers: int = setting(4, "threads that decode and preprocess images")
    metrics_port: int = setting(
        ENCODER_METRICS_PORT, "port of the Prometheus /metrics page (0: any free port, -1: none)"
    )

    def __post_init__(self) -> None:
        require_at_least_one(
            self,
            [
                "max_batch_size",
                "max_queue_size",
                "max_items_per_request",
                "max_image_bytes",
                "max_image_pixels",
                "max_text_chars",
                "decode_workers",
                "grpc_workers",
            ],
        )
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


def parse_args(argv: list[str] | None = None) -> EncoderConfig:
    return parse_config(
        EncoderConfig,
        "python -m encoder_service",
        "CLIP encoder over gRPC with dynamic batching.",
        "ENCODER_",
        argv,
    )

"""The encoder's own Prometheus metrics, beside the per-call ones every server has."""

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, Histogram

from imagesearch.observability import LATENCY_BUCKETS

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class EncoderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.batch_size = Histogram(
            "encoder_batch_size",
            "Items in one forward pass",
            ["tower"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.forward_seconds = Histogram(
            "encoder_forward_seconds",
            "Time of one forward pass",
            ["tower"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "encoder_queue_depth",
            "Items waiting for a forward pass, those still being decoded or tokenised included",
            ["tower"],
            registry=registry,
        )
        self.model_loaded = Gauge(
            "encoder_model_loaded", "1 once the model is loaded and warm", registry=registry
        )

    def batch_observer(self, tower: str) -> Callable[[int, float], None]:
        def observe(size: int, seconds: float) -> None:
            self.batch_size.labels(tower).observe(size)
            self.forward_seconds.labels(tower).observe(seconds)

        return observe

"""The search service's own Prometheus metrics, beside the per-call ones every server has."""

from prometheus_client import CollectorRegistry, Counter, Histogram

from imagesearch.observability import LATENCY_BUCKETS


class SearchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ingested = Counter(
            "search_ingest_items", "Ingested items, by outcome", ["outcome"], registry=registry
        )
        self.milvus_seconds = Histogram(
            "search_milvus_seconds",
            "Time of one Milvus call, by operation",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.encoder_seconds = Histogram(
            "search_encoder_seconds",
            "Time of one encoder call (retries included), by method and final status code",
            ["method", "code"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def observe_milvus(self, operation: str, seconds: float) -> None:
        self.milvus_seconds.labels(operation).observe(seconds)

    def observe_encoder(self, method: str, code: str, seconds: float) -> None:
        self.encoder_seconds.labels(method, code).observe(seconds)

"""The search process: Milvus and the encoder client, the gRPC server, and a health monitor."""

import json
import logging
import tempfile
import threading
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from imagesearch.cores import available_cores
from imagesearch.errors import ServiceError
from imagesearch.serving import GrpcServer
from imagesearch.tls import watched_channel_credentials
from imagesearch.v1 import search_pb2, search_pb2_grpc

from .config import SearchConfig, is_milvus_lite, shown_uri
from .encoder_replicas import EncoderReplicas
from .metrics import SearchMetrics
from .service import SearchServicer
from .store import Store
from .thumbnails import Thumbnails

log = logging.getLogger(__name__)


def thumbnail_folder(thumbnail_dir: str, milvus_uri: str) -> Path:
    """--thumbnail-dir, by default beside a Milvus Lite file (`milvus.db.thumbnails`) or `./thumbnails`; made
    if missing. A folder where no file can be written stops the start (OSError naming it): otherwise every
    picture ingested would be stored without its thumbnail, each with a warning of its own."""
    if thumbnail_dir:
        folder = Path(thumbnail_dir)
    else:
        folder = Path(f"{milvus_uri}.thumbnails") if is_milvus_lite(milvus_uri) else Path("thumbnails")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OSError(
            f"--thumbnail-dir {folder}: thumbnails cannot be written there ({error.strerror or error})"
        ) from None
    return folder


SERVICE_NAME = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
_LONGEST_ENCODER_CHECK_S = 2.0  # how long a health check waits for an encoder replica to answer


def default_thumbnail_workers(cores: int) -> int:
    """All the cores but two (for this process and Milvus Lite), from 1 to 16. Every ingested picture waits
    for its thumbnail (3 ms of CPU for a 500x375 photo), so these processes bound an ingest's rate, while
    they use CPU only for the pictures that arrive (and about 36 MB each when idle); 16 of them outpace what
    one search service's own work allows."""
    return max(1, min(16, cores - 2))


class SearchServer:
    """Health is SERVING only while both Milvus and an encoder replica answer; checked every interval."""

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        # First, while no gRPC or Milvus thread runs yet: its pool starts a helper process at once.
        self.thumbnails = Thumbnails(
            thumbnail_folder(config.thumbnail_dir, config.milvus_uri),
            config.thumbnail_max_pixels,
            config.thumbnail_workers or default_thumbnail_workers(available_cores()),
        )
        self.registry = CollectorRegistry()
        self.metrics = SearchMetrics(self.registry)
        self.store = Store(
            config.milvus_uri,
            config.milvus_token,
            config.milvus_timeout_s,
            config.index_type,
            json.loads(config.index_params),
            self.metrics.observe_milvus,
            config.milvus_load_timeout_s,
        )
        self.encoder = EncoderReplicas(
            config.encoder,
            config.encoder_timeout_s,
            config.encoder_token,
            self.metrics.observe_encoder,
            watched_channel_credentials(
                config.encoder_tls_ca,
                config.encoder_tls_cert,
                config.encoder_tls_key,
                ("--encoder-tls-ca", "--encoder-tls-cert", "--encoder-tls-key"),
                "encoders",
            ),
        )
        self.servicer = SearchServicer(config, self.store, self.encoder, self.metrics, self.thumbnails)
        self.grpc: GrpcServer | None = None
        self._stopping = threading.Event()
        self._monitor = threading.Thread(target=self._watch_health, name="health-monitor", daemon=True)

    def start(self) -> str:
        self.grpc = GrpcServer(
            self.config,
            SERVICE_NAME,
            lambda server: search_pb2_grpc.add_SearchServiceServicer_to_server(self.servicer, server),
            self.config.max_message_bytes,
            self.registry,
        )
        self.check_health()
        self._monitor.start()
        log.info(
            "search service listening on %s (Milvus %s, encoder %s)",
            self.grpc.address,
            shown_uri(self.config.milvus_uri),
            self.config.encoder,
        )
        return self.grpc.address

    def check_health(self) -> bool:
        default = None
        try:
            self.store.ping()
            # Loaded before health says SERVING (then a no-op): its first searches would wait for the load.
            default = self.store.open_collection(self.config.collection)
            milvus_ok = True
        except ServiceError as error:
            log.warning("health: %s", error.message)
            # A default collection this service cannot use (another's) leaves the other collections usable.
            milvus_ok = error.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        model = self.encoder.serving_model(
            timeout_s=min(_LONGEST_ENCODER_CHECK_S, self.config.health_interval_s)
        )
        if model is None:
            log.warning("health: no encoder replica answers at %s", self.config.encoder)
        elif default is not None:
            try:  # said, where every call on the default collection fails FAILED_PRECONDITION saying it
                default.require_model(model)
            except ServiceError as error:
                log.warning("health: %s", error.message)
        serving = milvus_ok and model is not None
        assert self.grpc is not None
        self.grpc.set_serving(serving)
        return serving

    def _watch_health(self) -> None:
        while not self._stopping.wait(self.config.health_interval_s):
            try:
                self.check_health()
            except Exception:  # the next check may see more; a monitor gone would leave health as it was
                log.exception("health: the check failed unexpectedly")

    def stop(self) -> None:
        self._stopping.set()
        if self.grpc is not None:
            self.grpc.stop(self.config.shutdown_grace_s)
        if self._monitor.ident is not None:  # a check under way would use what is closed next
            self._monitor.join(timeout=self.config.milvus_timeout_s + _LONGEST_ENCODER_CHECK_S)
        self.encoder.close()
        self.store.close()
        self.thumbnails.close()

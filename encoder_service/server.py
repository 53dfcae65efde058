"""The encoder process: a gRPC server that answers health checks at once and serves once the model is warm."""

import logging

from prometheus_client import CollectorRegistry

from imagesearch.serving import GrpcServer
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc

from .config import EncoderConfig
from .metrics import EncoderMetrics
from .model import resolve_device
from .runtime import EncoderRuntime
from .service import EncoderServicer

log = logging.getLogger(__name__)

SERVICE_NAME = encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name


class EncoderServer:
    """`start()` listens with health NOT_SERVING; `load()` loads and warms the model, then reports SERVING."""

    def __init__(self, config: EncoderConfig) -> None:
        self.config = config.resolved_for(resolve_device(config.device))
        self.registry = CollectorRegistry()
        self.metrics = EncoderMetrics(self.registry)
        self.servicer = EncoderServicer(self.config)
        self.grpc: GrpcServer | None = None

    def start(self) -> str:
        self.grpc = GrpcServer(
            self.config,
            SERVICE_NAME,
            lambda server: encoder_pb2_grpc.add_EncoderServiceServicer_to_server(self.servicer, server),
            self.config.max_message_bytes,
            self.registry,
        )
        log.info("encoder listening on %s, loading %s", self.grpc.address, self.config.model)
        return self.grpc.address

    def load(self) -> None:
        assert self.grpc is not None, "start() before load()"
        self.servicer.runtime = EncoderRuntime(self.config, self.metrics)
        self.metrics.model_loaded.set(1)
        self.grpc.set_serving(True)
        log.info("encoder serving %s on %s", self.config.model, self.grpc.address)

    def stop(self) -> None:
        """Refuses new calls, lets in-flight calls finish, then stops the batchers and worker processes."""
        if self.grpc is not None:
            self.grpc.stop(self.config.shutdown_grace_s)
        if self.servicer.runtime is not None:
            self.servicer.runtime.close()

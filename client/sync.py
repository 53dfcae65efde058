"""The blocking clients: EncoderClient and SearchClient."""

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc

from imagesearch.v1 import encoder_pb2_grpc, search_pb2_grpc

from .calls import EncoderCalls, SearchCalls
from .models import IngestSummary
from .protocol import Connection, IngestRun


class _Blocking(Connection):
    channel_api = grpc

    def _run(self, method: str, request: object, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(getattr(self.stub, method)(request, timeout=self.timeout, metadata=self.metadata))
        except grpc.RpcError as error:
            raise self.error(error) from None

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EncoderClient(EncoderCalls, _Blocking):
    service = "encoder service"
    stub_type = encoder_pb2_grpc.EncoderServiceStub

    def __init__(self, target: str = "localhost:50051", **options: Any) -> None:
        super().__init__(target, **options)


class SearchClient(SearchCalls, _Blocking):
    service = "search service"
    stub_type = search_pb2_grpc.SearchServiceStub

    def __init__(self, target: str = "localhost:50052", collection: str = "", **options: Any) -> None:
        self.collection = collection
        super().__init__(target, **options)

    def ingest(
        self,
        paths: Iterable[str | Path],
        metadata: Mapping[str, str] | None = None,
        recursive: bool = True,
        progress: bool = True,
    ) -> IngestSummary:
        """Streams every picture under `paths`; files that are not images are skipped by their content."""
        with IngestRun(self, paths, recursive, metadata, progress) as run:
            for response in self.stub.Ingest(run.requests(), metadata=self.metadata):
                run.record(response)
        return run.summary

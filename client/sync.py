"""The blocking clients: EncoderClient and SearchClient."""

from collections.abc import Callable
from typing import Any

import grpc

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

    def _stream(self, run: IngestRun) -> IngestSummary:
        with run:
            for response in self.stub.Ingest(run.requests(), metadata=self.metadata):
                run.record(response)
        return run.summary

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EncoderClient(EncoderCalls, _Blocking):
    """EncoderClient("localhost:50051", timeout=60, credentials=None, token=None)"""


class SearchClient(SearchCalls, _Blocking):
    """SearchClient("localhost:50052", collection="", timeout=60, credentials=None, token=None)"""

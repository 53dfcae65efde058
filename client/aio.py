"""The asyncio clients: AsyncEncoderClient and AsyncSearchClient, the same calls awaited."""

from collections.abc import Callable
from typing import Any

import grpc

from .calls import EncoderCalls, SearchCalls
from .models import IngestSummary
from .protocol import Connection, IngestRun


class _Awaitable(Connection):
    channel_api = grpc.aio

    async def _run(self, method: str, request: object, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(
                await getattr(self.stub, method)(request, timeout=self.timeout, metadata=self.metadata)
            )
        except grpc.RpcError as error:
            raise self.error(error) from None

    async def _stream(self, run: IngestRun) -> IngestSummary:
        with run:
            async for response in self.stub.Ingest(run.requests(), metadata=self.metadata):
                run.record(response)
        return run.summary

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self):  # type: ignore[no-untyped-def]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AsyncEncoderClient(EncoderCalls, _Awaitable):
    """AsyncEncoderClient("localhost:50051", timeout=60, credentials=None, token=None), used with await."""


class AsyncSearchClient(SearchCalls, _Awaitable):
    """AsyncSearchClient("localhost:50052", collection="", timeout=60, ...), used with await."""

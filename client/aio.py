"""The asyncio clients: AsyncSearchClient and AsyncEncoderClient, each method awaited. Every failure raises
ImageSearchError; files are read in worker threads, never on the event loop."""

from __future__ import annotations  # grpc's call types are generic to type checkers only

import asyncio
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import grpc
import grpc.aio
import numpy as np

from imagesearch.defaults import ENCODER_ADDRESS, MAX_MESSAGE_BYTES, SEARCH_ADDRESS
from imagesearch.v1 import encoder_pb2_grpc, search_pb2_grpc

from . import messages
from .channel import DEFAULT_TIMEOUT_S, Connection
from .errors import ImageSearchError, IngestInterrupted
from .files import part_picture, picture_bytes
from .ingest import AsyncProgress, Ingestion
from .messages import FilterParam
from .models import Hit, ImageVector, IngestSummary, Limits, MetadataValue, QueryPart, Record, Stats

Request = TypeVar("Request")
Response = TypeVar("Response")


def _loop_grpc_binds() -> asyncio.AbstractEventLoop:
    """The loop a grpc.aio channel made now belongs to, as grpc.aio chooses it: the running one, else the one
    set for this thread (`loop.run_until_complete` after `asyncio.set_event_loop(loop)`); RuntimeError when
    there is neither."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return asyncio.get_event_loop()


class _Awaitable(Connection):
    """A grpc.aio channel: it belongs to the event loop it is made in, which grpc.aio says only with
    RuntimeErrors ("attached to a different loop", "Event loop is closed", "no current event loop")."""

    channel: grpc.aio.Channel

    def _open(self, api: ModuleType, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
        try:
            self.loop = _loop_grpc_binds()
        except RuntimeError:  # no loop runs or is set: after an asyncio.run, say
            raise ImageSearchError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"an asyncio client of the {self.service} is made where an event loop runs or is set (in an "
                "async def, as `async with`), and used in that loop only",
            ) from None
        channel: grpc.aio.Channel = super()._open(api, credentials)
        return channel

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """As the blocking client's, once the call is known to run in the client's own loop."""
        if asyncio.get_running_loop() is not self.loop:
            raise ImageSearchError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this client of the {self.service} at {self.target} belongs to the event loop it was made "
                "in: make one in this loop",
            )
        return super().metadata()

    async def call(
        self, method: grpc.aio.UnaryUnaryMultiCallable[Request, Response], request: Request
    ) -> Response:
        try:
            return await method(request, timeout=self.timeout, metadata=self.metadata())
        except grpc.RpcError as error:
            raise self.error(error) from None
        except asyncio.CancelledError:
            if not self.cancelled_by_close():
                raise
            raise self.closed_under_a_call() from None

    def cancelled_by_close(self) -> bool:
        """Whether a CancelledError came from closing this client (grpc.aio cancels its calls), and not from
        a cancel of the task, which is the caller's to see."""
        task = asyncio.current_task()
        return self.closed and (task is None or task.cancelling() == 0)


async def _cancel_when_silent(call: grpc.aio.Call, ingestion: Ingestion, timeout: float) -> None:
    """Cancels an ingest stream once the service has owed an answer for `timeout` s without giving any (as
    the blocking client's `_cancel_when_silent`)."""
    while (left := ingestion.silence_left(timeout)) > 0:
        await asyncio.sleep(left)
    ingestion.went_silent = True
    call.cancel()


class AsyncSearchClient:
    """AsyncSearchClient("localhost:50052", collection="", timeout=120, credentials=None, token=None)

    `collection` empty means the service's default; `credentials` (grpc.ssl_channel_credentials) turn on
    TLS; `token` is sent as `authorization: Bearer <token>`.
    """

    def __init__(
        self,
        target: str = SEARCH_ADDRESS,
        collection: str = "",
        timeout: float | None = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        self.collection = collection
        self._connection = _Awaitable(grpc.aio, "search service", target, timeout, credentials, token)
        self._stub = search_pb2_grpc.SearchServiceStub(self._connection.channel)
        self._reads_every_field = False  # its service has answered GetLimits: it reads dry_run, min_score

    async def ingest(
        self,
        paths: str | Path | Sequence[str | Path],
        metadata: Mapping[str, MetadataValue] | None = None,
        recursive: bool = True,
        progress: AsyncProgress | None = None,
    ) -> IngestSummary:
        """Streams every picture under `paths` (one path, or several) and says what happened to each file;
        `progress` is called with each item as it finishes and the summary so far, and what it raises ends
        the ingest. A stream that breaks, or a service that cannot even say its limits first, raises
        IngestInterrupted, with the results received until then."""
        ingestion = await asyncio.to_thread(Ingestion, paths, recursive, self.collection, metadata, progress)
        try:
            limits = await self.limits()
        except ImageSearchError as unasked:
            raise IngestInterrupted(unasked, ingestion.summary) from None
        requests = ingestion.async_requests(limits)
        call = self._stub.Ingest(requests, metadata=self._connection.metadata())
        timeout = self._connection.timeout
        watch = (
            None if timeout is None else asyncio.create_task(_cancel_when_silent(call, ingestion, timeout))
        )
        try:
            async for response in call:
                if (told := ingestion.record(response)) is not None:
                    await told
        except grpc.RpcError as error:
            failure = self._connection.error(error, answered=True)  # its limits, just before
            raise IngestInterrupted(failure, ingestion.summary) from None
        except asyncio.CancelledError:
            if ingestion.went_silent:
                raise IngestInterrupted(self._connection.silence(), ingestion.summary) from None
            if self._connection.cancelled_by_close():
                raise IngestInterrupted(self._connection.closed_under_a_call(), ingestion.summary) from None
            raise  # not our cancel of the call: whoever cancelled this task
        finally:
            if watch is not None:
                watch.cancel()
            call.cancel()
        ingestion.raise_failure()
        return ingestion.summary

    async def search_text(
        self,
        text: str,
        top_k: int = 10,
        filter: str | None = None,
        filter_params: Mapping[str, FilterParam] | None = None,
        offset: int = 0,
        output_fields: Sequence[str] = (),
        min_score: float | None = None,
    ) -> list[Hit]:
        options = messages.search_options(
            self.collection, top_k, offset, filter, filter_params, output_fields, min_score
        )
        if min_score is not None:
            await self._read_by_the_service(messages.MIN_SCORE_IGNORED)
        request = messages.search_text_request(text, options)
        response = await self._connection.call(self._stub.SearchText, request)
        return messages.hits(response, output_fields)

    async def search_image(
        self,
        image: bytes | str | Path,
        top_k: int = 10,
        filter: str | None = None,
        filter_params: Mapping[str, FilterParam] | None = None,
        offset: int = 0,
        output_fields: Sequence[str] = (),
        min_score: float | None = None,
    ) -> list[Hit]:
        """Pictures like `image`: its bytes, or the path of a picture file."""
        options = messages.search_options(
            self.collection, top_k, offset, filter, filter_params, output_fields, min_score
        )
        if min_score is not None:
            await self._read_by_the_service(messages.MIN_SCORE_IGNORED)
        picture = await asyncio.to_thread(picture_bytes, image, MAX_MESSAGE_BYTES)
        request = messages.search_image_request(picture, options)
        response = await self._connection.call(self._stub.SearchImage, request)
        return messages.hits(response, output_fields)

    async def search_similar(
        self,
        id: str,
        top_k: int = 10,
        filter: str | None = None,
        filter_params: Mapping[str, FilterParam] | None = None,
        offset: int = 0,
        output_fields: Sequence[str] = (),
        min_score: float | None = None,
    ) -> list[Hit]:
        """More like the stored picture `id`: its stored vector is the query; NOT_FOUND when not stored."""
        parts = [QueryPart(id=id)]
        return await self.search(parts, top_k, filter, filter_params, offset, output_fields, min_score)

    async def search(
        self,
        parts: QueryPart | Sequence[QueryPart],
        top_k: int = 10,
        filter: str | None = None,
        filter_params: Mapping[str, FilterParam] | None = None,
        offset: int = 0,
        output_fields: Sequence[str] = (),
        min_score: float | None = None,
    ) -> list[Hit]:
        """The parts' vectors (one part, or several) added up by weight (negative: away from it)."""
        listed = messages.query_parts(parts)
        options = messages.search_options(
            self.collection, top_k, offset, filter, filter_params, output_fields, min_score
        )
        pictures = [await asyncio.to_thread(part_picture, part, MAX_MESSAGE_BYTES) for part in listed]
        request = messages.search_request(listed, pictures, options)
        response = await self._connection.call(self._stub.Search, request)
        return messages.hits(response, output_fields)

    async def thumbnail(self, id: str) -> bytes:
        """The stored picture's JPEG thumbnail (longest side at most 256 px); NOT_FOUND when it has none."""
        request = messages.thumbnail_request(self.collection, id)
        return (await self._connection.call(self._stub.GetThumbnail, request)).jpeg

    async def get(self, ids: str | Sequence[str], output_fields: Sequence[str] = ()) -> list[Record]:
        """The stored records of `ids` (one id, or several)."""
        request = messages.get_request(self.collection, ids, output_fields)
        return messages.records(await self._connection.call(self._stub.Get, request), output_fields)

    async def delete(
        self,
        ids: str | Sequence[str] | None = None,
        filter: str | None = None,
        filter_params: Mapping[str, FilterParam] | None = None,
        dry_run: bool = False,
    ) -> int:
        """How many pictures were deleted (with `dry_run`, would be): by id, or every one a filter matches."""
        request = messages.delete_request(self.collection, ids, filter, filter_params, dry_run)
        if dry_run:
            await self._read_by_the_service(messages.DRY_RUN_IGNORED)
        return (await self._connection.call(self._stub.Delete, request)).deleted

    async def stats(self) -> Stats:
        request = messages.stats_request(self.collection)
        return messages.stats(await self._connection.call(self._stub.Stats, request))

    async def limits(self) -> Limits:
        return messages.limits(await self._connection.call(self._stub.GetLimits, messages.LIMITS_REQUEST))

    async def _read_by_the_service(self, field: str) -> None:
        """Makes sure, once, that the service reads `field` before a request carries it: the first version's
        ignores it, and lacks GetLimits."""
        if not self._reads_every_field:
            try:
                await self.limits()
            except ImageSearchError as error:
                if (older := self._connection.older_service(error, field)) is not None:
                    raise older from None
            self._reads_every_field = True

    async def close(self) -> None:
        await self._connection.close()

    async def __aenter__(self) -> AsyncSearchClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AsyncEncoderClient:
    """AsyncEncoderClient("localhost:50051", timeout=120, credentials=None, token=None), used with await."""

    def __init__(
        self,
        target: str = ENCODER_ADDRESS,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        self._connection = _Awaitable(grpc.aio, "encoder service", target, timeout, credentials, token)
        self._stub = encoder_pb2_grpc.EncoderServiceStub(self._connection.channel)

    async def encode_texts(self, texts: str | Sequence[str]) -> np.ndarray:
        """(number of texts, 512) float32 unit vectors; a text alone is one."""
        request = messages.encode_text_request(texts)
        return messages.text_vectors(await self._connection.call(self._stub.EncodeText, request))

    async def encode_images(
        self, images: bytes | str | Path | Sequence[bytes | str | Path]
    ) -> list[ImageVector]:
        """One result per image (its bytes, or a picture file's path), in order: `.vector`, or `.error`."""
        listed = messages.image_list(images)
        pictures = [await asyncio.to_thread(picture_bytes, image, MAX_MESSAGE_BYTES) for image in listed]
        request = messages.encode_images_request(pictures)
        return messages.image_vectors(await self._connection.call(self._stub.EncodeImages, request))

    async def close(self) -> None:
        await self._connection.close()

    async def __aenter__(self) -> AsyncEncoderClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

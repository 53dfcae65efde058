"""The blocking clients: SearchClient and EncoderClient. Every failure raises ImageSearchError."""

from __future__ import annotations  # grpc's call types are generic to type checkers only

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np

from imagesearch.defaults import ENCODER_ADDRESS, MAX_MESSAGE_BYTES, SEARCH_ADDRESS
from imagesearch.v1 import encoder_pb2_grpc, search_pb2_grpc

from . import messages
from .channel import DEFAULT_TIMEOUT_S, Connection
from .errors import ImageSearchError, IngestInterrupted
from .files import part_picture, picture_bytes
from .ingest import Ingestion, Progress
from .messages import FilterParam
from .models import Hit, ImageVector, IngestSummary, Limits, MetadataValue, QueryPart, Record, Stats

Request = TypeVar("Request")
Response = TypeVar("Response")


class _Blocking(Connection):
    channel: grpc.Channel

    def call(self, method: grpc.UnaryUnaryMultiCallable[Request, Response], request: Request) -> Response:
        try:
            return method(request, timeout=self.timeout, metadata=self.metadata())
        except grpc.RpcError as error:
            raise self.error(error) from None


def _cancel_when_silent(
    call: grpc.Call, ingestion: Ingestion, timeout: float, ended: threading.Event
) -> None:
    """Cancels an ingest stream once the service has owed an answer for `timeout` s without giving any:
    a whole stream may take hours, but a service that stopped (or a network that dropped its packets) would
    otherwise hold the caller for ever."""
    while (left := ingestion.silence_left(timeout)) > 0:
        if ended.wait(left):
            return
    ingestion.went_silent = True
    call.cancel()


class SearchClient:
    """SearchClient("localhost:50052", collection="", timeout=120, credentials=None, token=None)

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
        self._connection = _Blocking(grpc, "search service", target, timeout, credentials, token)
        self._stub = search_pb2_grpc.SearchServiceStub(self._connection.channel)
        self._reads_every_field = False  # its service has answered GetLimits: it reads dry_run, min_score

    def ingest(
        self,
        paths: str | Path | Sequence[str | Path],
        metadata: Mapping[str, MetadataValue] | None = None,
        recursive: bool = True,
        progress: Progress | None = None,
    ) -> IngestSummary:
        """Streams every picture under `paths` (one path, or several) and says what happened to each file;
        `progress` is called with each item as it finishes and the summary so far, and what it raises ends
        the ingest. A stream that breaks, or a service that cannot even say its limits first, raises
        IngestInterrupted, with the results received until then."""
        ingestion = Ingestion(paths, recursive, self.collection, metadata, progress)
        try:
            limits = self.limits()
        except ImageSearchError as unasked:
            raise IngestInterrupted(unasked, ingestion.summary) from None
        call = self._stub.Ingest(ingestion.requests(limits), metadata=self._connection.metadata())
        ended = threading.Event()
        if self._connection.timeout is not None:
            watch = (call, ingestion, self._connection.timeout, ended)
            threading.Thread(target=_cancel_when_silent, args=watch, daemon=True).start()
        try:
            for response in call:
                ingestion.record(response)
        except grpc.RpcError as error:
            failure = (
                self._connection.silence()
                if ingestion.went_silent
                else self._connection.error(error, answered=True)  # its limits, just before
            )
            raise IngestInterrupted(failure, ingestion.summary) from None
        finally:
            ended.set()
            call.cancel()  # when the caller stopped reading (Ctrl-C): the service stops too
        ingestion.raise_failure()
        return ingestion.summary

    def search_text(
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
            self._read_by_the_service(messages.MIN_SCORE_IGNORED)
        request = messages.search_text_request(text, options)
        return messages.hits(self._connection.call(self._stub.SearchText, request), output_fields)

    def search_image(
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
            self._read_by_the_service(messages.MIN_SCORE_IGNORED)
        request = messages.search_image_request(picture_bytes(image, MAX_MESSAGE_BYTES), options)
        return messages.hits(self._connection.call(self._stub.SearchImage, request), output_fields)

    def search_similar(
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
        return self.search(parts, top_k, filter, filter_params, offset, output_fields, min_score)

    def search(
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
        pictures = [part_picture(part, MAX_MESSAGE_BYTES) for part in listed]
        request = messages.search_request(listed, pictures, options)
        response = self._connection.call(self._stub.Search, request)
        return messages.hits(response, output_fields)

    def thumbnail(self, id: str) -> bytes:
        """The stored picture's JPEG thumbnail (longest side at most 256 px); NOT_FOUND when it has none."""
        request = messages.thumbnail_request(self.collection, id)
        return (self._connection.call(self._stub.GetThumbnail, request)).jpeg

    def get(self, ids: str | Sequence[str], output_fields: Sequence[str] = ()) -> list[Record]:
        """The stored records of `ids` (one id, or several)."""
        request = messages.get_request(self.collection, ids, output_fields)
        return messages.records(self._connection.call(self._stub.Get, request), output_fields)

    def delete(
        self,
        ids: str | Sequence[str] | None = None,
        filter: str | None = None,
        filter_params: Mapping[str, FilterParam] | None = None,
        dry_run: bool = False,
    ) -> int:
        """How many pictures were deleted (with `dry_run`, would be): by id, or every one a filter matches."""
        request = messages.delete_request(self.collection, ids, filter, filter_params, dry_run)
        if dry_run:
            self._read_by_the_service(messages.DRY_RUN_IGNORED)
        return self._connection.call(self._stub.Delete, request).deleted

    def stats(self) -> Stats:
        request = messages.stats_request(self.collection)
        return messages.stats(self._connection.call(self._stub.Stats, request))

    def limits(self) -> Limits:
        return messages.limits(self._connection.call(self._stub.GetLimits, messages.LIMITS_REQUEST))

    def _read_by_the_service(self, field: str) -> None:
        """Makes sure, once, that the service reads `field` before a request carries it: the first version's
        ignores it, and lacks GetLimits."""
        if not self._reads_every_field:
            try:
                self.limits()
            except ImageSearchError as error:
                if (older := self._connection.older_service(error, field)) is not None:
                    raise older from None
            self._reads_every_field = True

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EncoderClient:
    """EncoderClient("localhost:50051", timeout=120, credentials=None, token=None): the encoder directly."""

    def __init__(
        self,
        target: str = ENCODER_ADDRESS,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        self._connection = _Blocking(grpc, "encoder service", target, timeout, credentials, token)
        self._stub = encoder_pb2_grpc.EncoderServiceStub(self._connection.channel)

    def encode_texts(self, texts: str | Sequence[str]) -> np.ndarray:
        """(number of texts, 512) float32 unit vectors; a text alone is one."""
        request = messages.encode_text_request(texts)
        return messages.text_vectors(self._connection.call(self._stub.EncodeText, request))

    def encode_images(self, images: bytes | str | Path | Sequence[bytes | str | Path]) -> list[ImageVector]:
        """One result per image (its bytes, or a picture file's path), in order: `.vector`, or `.error`."""
        pictures = [picture_bytes(image, MAX_MESSAGE_BYTES) for image in messages.image_list(images)]
        request = messages.encode_images_request(pictures)
        return messages.image_vectors(self._connection.call(self._stub.EncodeImages, request))

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> EncoderClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

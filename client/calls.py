"""Every call of both services, written once: build the request, name the method, read the response.

The blocking and asyncio clients differ only in `_run` (which returns the result, or an awaitable of it).
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc, search_pb2, search_pb2_grpc

from . import protocol
from .files import read_image
from .models import Hit, ImageVector, IngestSummary, QueryPart, Record, Stats

Params = Mapping[str, protocol.FilterParam] | None


class _Calls:
    # Given by the blocking or the asyncio connection: runs `method` on `request`, returns parse(response),
    # and streams an ingestion's requests, returning its summary.
    _run: Callable[[str, object, Callable[[Any], Any]], Any]
    _stream: Callable[[protocol.IngestRun], Any]


class EncoderCalls(_Calls):
    service = "encoder service"
    stub_type = encoder_pb2_grpc.EncoderServiceStub
    default_target = "localhost:50051"

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 512) float32 unit vectors."""
        return self._run(
            "EncodeText",
            encoder_pb2.EncodeTextRequest(texts=list(texts)),
            lambda response: np.asarray([r.vector.values for r in response.results], dtype=np.float32),
        )

    def encode_images(self, images: Sequence[bytes | str | Path]) -> list[ImageVector]:
        """One result per image, in order: `.vector`, or `.error` saying why there is none."""
        return self._run(
            "EncodeImages",
            encoder_pb2.EncodeImagesRequest(images=[read_image(image) for image in images]),
            lambda response: [ImageVector.from_proto(result) for result in response.results],
        )

    def info(self) -> encoder_pb2.GetModelInfoResponse:
        return self._run("GetModelInfo", encoder_pb2.GetModelInfoRequest(), lambda response: response)


class SearchCalls(_Calls):
    service = "search service"
    stub_type = search_pb2_grpc.SearchServiceStub
    default_target = "localhost:50052"

    def __init__(self, target: str = default_target, collection: str = "", **options: Any) -> None:
        self.collection = collection  # empty: the service's default collection
        super().__init__(target, **options)  # type: ignore[call-arg]

    def ingest(
        self,
        paths: Iterable[str | Path],
        metadata: Mapping[str, str] | None = None,
        recursive: bool = True,
        progress: bool = True,
    ) -> IngestSummary:
        """Streams every picture under `paths`; files that are not images are skipped by their content."""
        return self._stream(protocol.IngestRun(self, paths, recursive, metadata, progress))

    def search_text(
        self,
        text: str,
        top_k: int = 10,
        filter: str | None = None,
        filter_params: Params = None,
        offset: int = 0,
        output_fields: Sequence[str] = (),
        min_score: float | None = None,
    ) -> list[Hit]:
        options = protocol.search_options(
            self.collection, top_k, offset, filter, filter_params, output_fields, min_score
        )
        return self._run(
            "SearchText", search_pb2.SearchTextRequest(text=text, options=options), protocol.hits
        )

    def search_image(
        self,
        image: bytes | str | Path,
        top_k: int = 10,
        filter: str | None = None,
        filter_params: Params = None,
        offset: int = 0,
        output_fields: Sequence[str] = (),
        min_score: float | None = None,
    ) -> list[Hit]:
        options = protocol.search_options(
            self.collection, top_k, offset, filter, filter_params, output_fields, min_score
        )
        request = search_pb2.SearchImageRequest(image=read_image(image), options=options)
        return self._run("SearchImage", request, protocol.hits)

    def search_similar(
        self,
        id: str,
        top_k: int = 10,
        filter: str | None = None,
        filter_params: Params = None,
        offset: int = 0,
        output_fields: Sequence[str] = (),
        min_score: float | None = None,
    ) -> list[Hit]:
        """More like the stored picture `id`: its stored vector is the query; NOT_FOUND when not stored."""
        return self.search([QueryPart(id=id)], top_k, filter, filter_params, offset, output_fields, min_score)

    def search(
        self,
        parts: Sequence[QueryPart],
        top_k: int = 10,
        filter: str | None = None,
        filter_params: Params = None,
        offset: int = 0,
        output_fields: Sequence[str] = (),
        min_score: float | None = None,
    ) -> list[Hit]:
        """The parts' vectors added up by weight (negative: away from it), as one query."""
        options = protocol.search_options(
            self.collection, top_k, offset, filter, filter_params, output_fields, min_score
        )
        request = search_pb2.SearchRequest(
            parts=[protocol.query_part(part) for part in parts], options=options
        )
        return self._run("Search", request, protocol.hits)

    def thumbnail(self, id: str) -> bytes:
        """The stored picture's JPEG thumbnail (longest side 256 px); NOT_FOUND when it has none."""
        request = search_pb2.GetThumbnailRequest(collection=self.collection, id=id)
        return self._run("GetThumbnail", request, lambda response: response.jpeg)

    def get(self, ids: Sequence[str], output_fields: Sequence[str] = ()) -> list[Record]:
        request = search_pb2.GetRequest(
            collection=self.collection, ids=list(ids), output_fields=list(output_fields)
        )
        return self._run("Get", request, lambda response: [Record.from_proto(r) for r in response.records])

    def delete(
        self, ids: Sequence[str] | None = None, filter: str | None = None, filter_params: Params = None
    ) -> int:
        """How many pictures were deleted: by id, or every one a filter matches."""
        request = protocol.delete_request(self.collection, ids, filter, filter_params)
        return self._run("Delete", request, lambda response: response.deleted)

    def stats(self) -> Stats:
        return self._run("Stats", search_pb2.StatsRequest(collection=self.collection), Stats.from_proto)

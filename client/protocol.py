"""Building requests and reading responses: the one copy that the sync and asyncio clients share."""

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from tqdm import tqdm

from imagesearch.headers import REQUEST_ID, bearer
from imagesearch.v1 import search_pb2

from .errors import ImageSearchError
from .files import HEAD_BYTES, looks_like_image, read_image, walk
from .models import OUTCOMES, Hit, IngestItem, IngestSummary, QueryPart

FilterParam = str | int | float | bool | Sequence[str | int | float | bool]

# Unary calls are retried by gRPC itself when no server answered (UNAVAILABLE); ingest streams are not.
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": "imagesearch.v1.SearchService"},
                    {"service": "imagesearch.v1.EncoderService"},
                ],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
CHANNEL_OPTIONS = [
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]


def filter_value(name: str, value: FilterParam) -> search_pb2.FilterValue:
    if isinstance(value, bool):
        return search_pb2.FilterValue(bool_value=value)
    if isinstance(value, int):
        return search_pb2.FilterValue(int_value=value)
    if isinstance(value, float):
        return search_pb2.FilterValue(float_value=value)
    if isinstance(value, str):
        return search_pb2.FilterValue(string_value=value)
    if isinstance(value, Sequence):
        return search_pb2.FilterValue(
            list_value=search_pb2.FilterValueList(values=[filter_value(name, item) for item in value])
        )
    raise TypeError(
        f"filter parameter {name!r} is a {type(value).__name__}; use str, int, float, bool or a list"
    )


def filter_params(params: Mapping[str, FilterParam] | None) -> dict[str, search_pb2.FilterValue]:
    return {name: filter_value(name, value) for name, value in (params or {}).items()}


def search_options(
    collection: str,
    top_k: int,
    offset: int,
    filter: str | None,
    params: Mapping[str, FilterParam] | None,
    output_fields: Sequence[str],
    min_score: float | None = None,
) -> search_pb2.SearchOptions:
    return search_pb2.SearchOptions(
        collection=collection,
        top_k=top_k,
        offset=offset,
        filter=filter or "",
        filter_params=filter_params(params),
        output_fields=list(output_fields),
        min_score=min_score,  # None leaves it unset: no cut-off
    )


def query_part(part: QueryPart) -> search_pb2.QueryPart:
    if part.text is not None:
        return search_pb2.QueryPart(text=part.text, weight=part.weight)
    if part.image is not None:
        return search_pb2.QueryPart(image=read_image(part.image), weight=part.weight)
    return search_pb2.QueryPart(id=part.id, weight=part.weight)


def hits(
    response: search_pb2.SearchTextResponse | search_pb2.SearchImageResponse | search_pb2.SearchResponse,
) -> list[Hit]:
    return [Hit.from_proto(hit) for hit in response.hits]


def delete_request(
    collection: str, ids: Sequence[str] | None, filter: str | None, params: Mapping[str, FilterParam] | None
) -> search_pb2.DeleteRequest:
    if bool(ids) == bool(filter):
        raise ValueError("delete needs either ids or a filter, not both")
    return search_pb2.DeleteRequest(
        collection=collection, ids=list(ids or []), filter=filter or "", filter_params=filter_params(params)
    )


class Connection:
    """A channel to one service and its stub; `channel_api` is grpc or grpc.aio."""

    service = ""
    channel_api: Any = grpc
    stub_type: Any = None
    default_target = ""

    def __init__(
        self,
        target: str = "",
        timeout: float | None = 60.0,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        self.target = target or self.default_target
        self.timeout = timeout
        self.token = token or ""
        self.channel = (
            self.channel_api.secure_channel(self.target, credentials, CHANNEL_OPTIONS)
            if credentials
            else self.channel_api.insecure_channel(self.target, CHANNEL_OPTIONS)
        )
        self.stub = self.stub_type(self.channel)

    @property
    def metadata(self) -> list[tuple[str, str]]:
        """Each call's metadata: the token, and a fresh request id that the services log and pass on."""
        return [*bearer(self.token), (REQUEST_ID, uuid.uuid4().hex)]

    def error(self, error: grpc.RpcError) -> ImageSearchError:
        return ImageSearchError.from_rpc(error, self.service, self.target)


class IngestRun:
    """One ingestion: the requests to stream, and the summary built from the answers.

    Used as a context manager around the stream: it closes the progress bar and turns gRPC errors into
    ImageSearchError.
    """

    def __init__(
        self,
        connection: Connection,
        paths: Iterable[str | Path],
        recursive: bool,
        metadata: Mapping[str, str] | None,
        progress: bool,
    ) -> None:
        self.connection = connection
        self.files = list(walk(paths, recursive))
        self.collection = getattr(connection, "collection", "")
        self.metadata = dict(metadata or {})
        self.summary = IngestSummary()
        self._sent: list[str] = []
        self._bar = tqdm(total=len(self.files), unit="img", disable=not progress, dynamic_ncols=True)

    def __enter__(self) -> "IngestRun":
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: object) -> None:
        self._bar.close()
        if isinstance(error, grpc.RpcError):
            raise self.connection.error(error) from None

    def requests(self) -> Iterator[search_pb2.IngestRequest]:
        """Reads each file as it is sent, so memory stays flat however many there are."""
        for path in self.files:
            try:
                data = path.read_bytes()
            except OSError as error:
                self._finish(IngestItem(str(path), "", "failed", f"cannot read: {error.strerror}"))
                continue
            if not looks_like_image(data[:HEAD_BYTES]):
                self.summary.skipped.append(str(path))
                self._bar.update(1)
                continue
            self._sent.append(str(path))
            yield search_pb2.IngestRequest(
                collection=self.collection, image=data, uri=str(path), metadata=self.metadata
            )

    def record(self, response: search_pb2.IngestResponse) -> None:
        outcome = OUTCOMES[response.outcome]
        self._finish(IngestItem(self._sent[response.index], response.id, outcome, response.error))

    def _finish(self, item: IngestItem) -> None:
        self.summary.add(item)
        self._bar.update(1)
        self._bar.set_postfix(
            stored=self.summary.stored, present=self.summary.present, failed=self.summary.failed
        )


def as_dict(value: Any) -> Any:
    """A result as plain JSON-ready data (for --json)."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: as_dict(getattr(value, name)) for name in value.__dataclass_fields__ if name[0] != "_"}
    if isinstance(value, list):
        return [as_dict(item) for item in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value

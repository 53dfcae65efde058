"""The Python SDK and the `imgsearch` command line. Never imports torch.

from client import SearchClient
with SearchClient("localhost:50052") as search:
    search.ingest(["photos/"])
    for hit in search.search_text("a white dog", top_k=5):
        print(hit.score, hit.uri)
"""

import imagesearch  # noqa: F401  # first: it sets gRPC's log level, which grpc reads when imported

from .aio import AsyncEncoderClient, AsyncSearchClient
from .channel import request_id
from .errors import ImageSearchError, IngestInterrupted
from .models import (
    Hit,
    ImageVector,
    IngestItem,
    IngestSummary,
    Limits,
    MetadataValue,
    QueryPart,
    Record,
    Stats,
)
from .sync import EncoderClient, SearchClient

__all__ = [
    "AsyncEncoderClient",
    "AsyncSearchClient",
    "EncoderClient",
    "Hit",
    "ImageSearchError",
    "ImageVector",
    "IngestInterrupted",
    "IngestItem",
    "IngestSummary",
    "Limits",
    "MetadataValue",
    "QueryPart",
    "Record",
    "SearchClient",
    "Stats",
    "request_id",
]

"""The search service's settings, from flags with environment-variable twins (SEARCH_*)."""

import json
import re
from dataclasses import dataclass

from imagesearch.defaults import (
    ENCODER_PORT,
    GRPC_LARGEST_MESSAGE,
    MAX_IMAGE_PIXELS,
    MAX_MESSAGE_BYTES,
    SEARCH_METRICS_PORT,
    SEARCH_PORT,
)
from imagesearch.flags import parse_config, require_at_least, require_at_most, require_seconds, setting
from imagesearch.headers import unsendable
from imagesearch.serving import ServerSettings

from .names import collection_name_problem

_LITE_INDEX_TYPES = ("AUTOINDEX", "FLAT", "IVF_FLAT")
_MILVUS_LARGEST_WINDOW = 16384  # offset + limit of one search


@dataclass(frozen=True)
class SearchConfig(ServerSettings):
    encoder: str = setting(
        f"127.0.0.1:{ENCODER_PORT}",
        "encoder replicas: HOST:PORT, IP:PORT,IP:PORT, or a gRPC target such as dns:///encoder:50051",
    )
    # SEARCH_MILVUS_*, not MILVUS_*: pymilvus reads MILVUS_URI itself on import, and takes no Lite file there.
    milvus_uri: str = setting("./milvus.db", "a Milvus Lite file, or http://host:19530 for a Milvus server")
    milvus_token: str = setting("", "token for a Milvus server or Zilliz Cloud (user:password)")
    collection: str = setting("images", "the collection a request that names none uses")
    port: int = setting(SEARCH_PORT, "port to listen on (0: any free port)")
    index_type: str = setting(
        "AUTOINDEX",
        "vector index of new collections: AUTOINDEX, FLAT, IVF_FLAT; a server also takes HNSW and more",
    )
    index_params: str = setting("{}", 'index parameters as JSON, e.g. {"nlist": 1024} for IVF_FLAT')
    ingest_in_flight: int = setting(3, "batches of one ingest stream encoded and written at once")
    max_concurrent_ingests: int = setting(16, "ingest streams at once; more get RESOURCE_EXHAUSTED")
    ingest_buffer_bytes: int = setting(
        256 * 1024 * 1024,
        "bytes of pictures one ingest stream holds at once, waiting or being encoded and written; its client "
        "waits for room (a larger picture is taken alone)",
    )
    ingest_idle_timeout_s: float = setting(
        600.0,
        "an ingest stream that sends no picture for this long, with none of its own under way, is ended "
        "(DEADLINE_EXCEEDED): a client that stopped sending frees its slot (a picture must arrive whole "
        "within it: 64 MiB at 1 Mbit/s takes 9 minutes)",
    )
    encoder_timeout_s: float = setting(60.0, "deadline of one encoder call, retries included")
    milvus_timeout_s: float = setting(10.0, "deadline of one Milvus call")
    milvus_load_timeout_s: float = setting(
        600.0,
        "deadline of loading a collection into memory, once per start: a Milvus Lite file of a million "
        "pictures loads for tens of seconds, and health stays NOT_SERVING until --collection is loaded",
    )
    max_top_k: int = setting(1000, "largest top_k a search may ask for")
    max_offset: int = setting(10000, "largest offset a search may ask for")
    max_query_parts: int = setting(16, "most parts (texts, pictures, ids) one Search query may combine")
    thumbnail_dir: str = setting(
        "",
        "folder of the stored pictures' thumbnails (JPEG, named by id, served by GetThumbnail); empty: "
        "beside the Milvus Lite file (<file>.thumbnails), or ./thumbnails with a Milvus server, where every "
        "replica must share one folder (a shared volume)",
    )
    thumbnail_max_pixels: int = setting(
        MAX_IMAGE_PIXELS, "largest width x height decoded to make a thumbnail (decompression bombs)"
    )
    thumbnail_workers: int = setting(
        0, "processes that make the thumbnails (0: all the cores but two, from 1 to 16)"
    )
    max_message_bytes: int = setting(
        MAX_MESSAGE_BYTES, "largest request message (one image and its metadata)"
    )
    health_interval_s: float = setting(
        5.0, "how often Milvus and the encoder are checked for the health status"
    )
    encoder_token: str = setting("", "bearer token this service sends to the encoder")
    encoder_tls_ca: str = setting(
        "", "PEM CA that verifies the encoders' certificates (turns on TLS to them)"
    )
    encoder_tls_cert: str = setting("", "PEM client certificate this service shows the encoders (mutual TLS)")
    encoder_tls_key: str = setting("", "PEM private key of that client certificate")
    metrics_port: int = setting(
        SEARCH_METRICS_PORT, "port of the Prometheus /metrics page (0: any free port, -1: none)"
    )

    def __post_init__(self) -> None:
        self.check_serving()
        if why := unsendable(self.encoder_token, "encoder_token"):
            raise ValueError(why)
        require_at_least(
            self,
            [
                "ingest_in_flight",
                "max_concurrent_ingests",
                "ingest_buffer_bytes",
                "max_top_k",
                "max_message_bytes",
                "grpc_workers",
                "max_query_parts",
                "thumbnail_max_pixels",
            ],
        )
        require_at_least(self, ["thumbnail_workers", "max_offset"], 0)
        require_at_most(self, ["max_message_bytes"], GRPC_LARGEST_MESSAGE)
        require_seconds(
            self,
            [
                "encoder_timeout_s",
                "milvus_timeout_s",
                "milvus_load_timeout_s",
                "health_interval_s",
                "ingest_idle_timeout_s",
            ],
        )
        if self.max_top_k + self.max_offset > _MILVUS_LARGEST_WINDOW:
            raise ValueError(
                f"max_top_k + max_offset must be at most {_MILVUS_LARGEST_WINDOW} (Milvus's limit on a "
                f"search's offset + limit), not {self.max_top_k} + {self.max_offset}"
            )
        if problem := collection_name_problem(self.collection):
            raise ValueError(f"collection: {problem}")
        if is_milvus_lite(self.milvus_uri) and self.index_type not in _LITE_INDEX_TYPES:
            raise ValueError(
                f"index_type {self.index_type!r}: Milvus Lite takes {', '.join(_LITE_INDEX_TYPES)} (a Milvus "
                "server takes HNSW and more)"
            )
        try:
            if not isinstance(json.loads(self.index_params), dict):
                raise ValueError
        except ValueError:
            raise ValueError(f"index_params must be a JSON object, not {self.index_params!r}") from None


# scheme://user:password@ (the password up to the last @ of the authority, as URL parsers read it)
_PASSWORD_IN_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#:@]*):[^/?#]*@")


def is_milvus_lite(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "tcp://", "unix:"))


def shown_uri(uri: str) -> str:
    """`uri` as logs and error messages show it: a password in it (http://user:password@host) as ***."""
    return _PASSWORD_IN_URI.sub(r"\1:***@", uri)


def parse_args(argv: list[str] | None = None) -> SearchConfig:
    return parse_config(
        SearchConfig,
        "python -m search_service",
        "Text and image search over a Milvus collection, encoding through the encoder service.",
        "SEARCH_",
        argv,
    )

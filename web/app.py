"""The page and its JSON API: read-only, every answer JSON (or a JPEG thumbnail), every error {"error": ...}.

GET  /                      the page (web/static)
GET  /api/status            the collection: pictures, model
GET  /api/search?...        hits for texts and stored ids (web/query.py has the parameters)
POST /api/search?...        the same with a picture as the body (at most --max-upload-bytes)
GET  /thumbnails/<id>       a stored picture's JPEG thumbnail; only 64 lowercase hex digits reach the service
GET  /healthz               the process answers, to any Host header (web/hosts.py)
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath

import grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from client import AsyncSearchClient, Hit
from imagesearch.defaults import PICTURE_ID
from imagesearch.tls import watched_channel_credentials

from .access import AccessLog
from .config import WebConfig
from .errors import HANDLERS, ApiError
from .headers import SecurityHeaders
from .hosts import AllowedHosts, allowed_hosts
from .query import parse_query
from .search_client import RenewingSearchClient

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"


def file_name(uri: str) -> str:
    """The last part of `uri`, a path on the machine that ingested: on POSIX a backslash is part of a name."""
    path = PurePosixPath(uri) if uri.startswith("/") else PureWindowsPath(uri)
    return path.name


def hit_json(hit: Hit) -> dict[str, object]:
    return {
        "id": hit.id,
        "score": hit.score,
        "uri": hit.uri,
        "name": file_name(hit.uri),
        "metadata": hit.metadata,
        "thumbnail": f"/thumbnails/{hit.id}",
    }


# An upload as an HTML form or `curl -F` sends it: the picture inside a form, which the encoder read as an
# unknown image format. A urlencoded "form" is taken as it is: `curl --data-binary @photo.jpg` labels a
# picture's bytes so.
MULTIPART_FORM = "multipart/form-data"


async def read_picture(request: Request, limit: int) -> bytes:
    """The request's body, refused with 413 as soon as it is known to be over `limit` bytes, and with 415 when
    it is a multipart form."""
    if request.headers.get("content-type", "").lower().startswith(MULTIPART_FORM):
        raise ApiError(
            415,
            "the picture was sent inside a form: POST its bytes as the whole request body "
            "(curl --data-binary @photo.jpg)",
        )
    too_large = f"the picture is over the limit of {limit} bytes"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"{too_large} ({declared} bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, too_large)
    if not body:
        raise ApiError(400, "no picture: POST the picture's bytes as the request body")
    return bytes(body)


class SearchPage:
    """The routes, around the SDK client that the app's lifetime opens (made again with new TLS files)."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        # Read before the server starts, so that a file that cannot be used stops the start naming it.
        self._tls = watched_channel_credentials(
            config.search_tls_ca,
            config.search_tls_cert,
            config.search_tls_key,
            ("--search-tls-ca", "--search-tls-cert", "--search-tls-key"),
            "search service",
        )
        self._clients: RenewingSearchClient | None = None
        self._page_size: int | None = None  # once the search service's limits are known
        self._uploads = asyncio.Semaphore(config.max_concurrent_uploads)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._clients = RenewingSearchClient(self._client_with, self._tls)
        try:
            yield
        finally:
            await self._clients.close()

    def _client_with(self, credentials: grpc.ChannelCredentials | None) -> AsyncSearchClient:
        return AsyncSearchClient(
            self.config.search,
            collection=self.config.collection,
            timeout=self.config.timeout_s,
            credentials=credentials,
            token=self.config.search_token or None,
        )

    def client(self) -> AbstractAsyncContextManager[AsyncSearchClient]:
        """The SDK client for one request's calls."""
        assert self._clients is not None, "the app's lifespan opens the client"
        return self._clients.using()

    async def page_size(self, client: AsyncSearchClient) -> int:
        """--page-size, or the search service's max_top_k where that is lower: a page size over it failed
        every search that named no top_k (the page's own)."""
        if self._page_size is None:
            largest = (await client.limits()).max_top_k
            if self.config.page_size > largest:
                log.warning(
                    "--page-size %d is over the search service's max_top_k: pages hold %d hits",
                    self.config.page_size,
                    largest,
                )
            self._page_size = min(self.config.page_size, largest)
        return self._page_size

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def status(self, request: Request) -> Response:
        async with self.client() as client:
            stats = await client.stats()
        return JSONResponse(
            {
                "collection": stats.collection,
                "count": stats.count,
                "model": stats.model,
                "dimension": stats.dimension,
            }
        )

    async def search(self, request: Request) -> Response:
        if request.method != "POST":
            return await self._search(request, None)
        # Each upload is held in memory until its search is answered: so many at once, and each in time.
        if self._uploads.locked():
            raise ApiError(
                503,
                f"{self.config.max_concurrent_uploads} searches by picture are under way already "
                "(--max-concurrent-uploads); retry later",
            )
        async with self._uploads:
            try:
                async with asyncio.timeout(self.config.upload_timeout_s):
                    picture = await read_picture(request, self.config.max_upload_bytes)
            except TimeoutError:
                late = f"the picture did not arrive within {self.config.upload_timeout_s:g} s"
                raise ApiError(408, f"{late} (--upload-timeout-s)") from None
            return await self._search(request, picture)

    async def _search(self, request: Request, picture: bytes | None) -> Response:
        # A malformed query is 400 before the service is asked anything (its limits included).
        query = parse_query(request.scope["query_string"], picture)
        async with self.client() as client:
            top_k = await self.page_size(client) if query.top_k is None else query.top_k
            started = time.perf_counter()
            hits = await client.search(
                query.parts, top_k=top_k, offset=query.offset, min_score=query.min_score
            )
        return JSONResponse(
            {
                "hits": [hit_json(hit) for hit in hits],
                "took_ms": round((time.perf_counter() - started) * 1000, 1),
                "top_k": top_k,
                "offset": query.offset,
            }
        )

    async def thumbnail(self, request: Request) -> Response:
        image_id = request.path_params["id"]
        if not PICTURE_ID.fullmatch(image_id):
            raise ApiError(404, "no such thumbnail: an id is 64 lowercase hexadecimal digits")
        async with self.client() as client:
            jpeg = await client.thumbnail(image_id)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def create_app(config: WebConfig) -> ASGIApp:
    page = SearchPage(config)
    app = Starlette(
        routes=[
            Route("/", page.page),
            Route("/healthz", page.healthz),
            Route("/api/status", page.status),
            Route("/api/search", page.search, methods=["GET", "POST"]),
            Route("/thumbnails/{id}", page.thumbnail),
            Mount("/static", StaticFiles(directory=STATIC)),
        ],
        exception_handlers=HANDLERS,
        lifespan=page.lifespan,
    )
    # Around the whole app: Starlette answers an unexpected exception (500) outside its own middleware. The
    # access log outermost, to log every answer; the host check inside the headers, so its 400 has them too.
    return AccessLog(SecurityHeaders(AllowedHosts(app, allowed_hosts(config.allowed_hosts))))

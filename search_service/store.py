"""The Milvus side: one collection per name, its schema and index, and every call with a deadline.

Each collection is stamped (in its description) with the model that made its vectors, so that vectors of two
models never meet in one collection.
"""

import contextlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from milvus_lite.server_manager import server_manager_instance
from pymilvus import CollectionSchema, DataType, MilvusClient, MilvusException
from pymilvus.exceptions import ConnectionConfigException, MilvusUnavailableException

from imagesearch.calls import current_caller
from imagesearch.errors import ServiceError, invalid_argument

from .config import is_milvus_lite, shown_uri
from .lite_file import check_lite_file
from .names import collection_name_problem

log = logging.getLogger(__name__)

Result = TypeVar("Result")

ID_LENGTH = 64  # sha256 hex
MAX_URI_LENGTH = 4096
MAX_MODEL_LENGTH = 512
# Milvus's code for a request it refuses as malformed (a bad filter expression, say).
_MILVUS_INVALID_PARAMETER = 1100
_MILVUS_COLLECTION_NOT_FOUND = 100
_MILVUS_CANNOT_CONNECT = 2
DELETE_BATCH = 1000
# What a search reads (its query's stored vectors too), and the count beside it, is read at Session
# consistency on a Milvus server: it waits only for this process's own last write, where Strong waits for the
# server's next time tick (a search there: 6.5 ms against 384 with nothing written since,
# bench/milvus_server.py). A search sees everything this process stored (pymilvus keeps the time of its last
# write per server and collection), and other processes' writes once the server has taken them in (usually
# within its 200 ms tick). Reads that decide what is written or deleted, and Get, take the collection's own
# level, DECIDING. Milvus Lite, one process, sees every write at once either way.
SHOWN = "Session"
DECIDING = "Strong"
# Free space under which a failed write to Milvus Lite is put down to a full disk: Lite itself says only
# "Unexpected error in RPC handling".
LITE_LOW_SPACE_BYTES = 64 << 20
# Milvus Lite runs in a process this one starts, which answers within a second or two, but took over 10 s
# (--milvus-timeout-s) on a busy machine's first, cold start: its connection may take this long.
LITE_START_S = 60.0
METRIC = "COSINE"  # what every collection's vectors are indexed and searched by


def _schema(model: str, dimension: int) -> CollectionSchema:
    """Each collection's fields; its description stamps the model whose vectors it holds."""
    schema = MilvusClient.create_schema(
        auto_id=False,
        enable_dynamic_field=False,
        description=json.dumps({"model": model, "dimension": dimension}),
    )
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_LENGTH)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
    schema.add_field("uri", DataType.VARCHAR, max_length=MAX_URI_LENGTH)
    schema.add_field("model", DataType.VARCHAR, max_length=MAX_MODEL_LENGTH)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("ingested_at", DataType.INT64)
    return schema


FIELDS = tuple(field.name for field in _schema("", 1).fields)


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    model: str
    dimension: int

    def require_model(self, model: str) -> None:
        """FAILED_PRECONDITION unless `model` made this collection's vectors: the same name, or a checkpoint
        file of the same bytes (`name@sha256:…`) under another name, moved into a volume, say."""
        if _weights(model) != _weights(self.model):
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"collection {self.name!r} holds vectors of model {self.model!r}, but the encoder serves "
                f"{model!r}: use an encoder of {self.model!r}, or another collection",
            )


def _weights(model: str) -> str:
    """What tells a model apart: a checkpoint file's hash (the encoder names one `file.pt@sha256:…`), else its
    name."""
    _, hashed, digest = model.rpartition("@sha256:")
    return f"sha256:{digest}" if hashed else model


def _schema_problem(fields: list[dict[str, Any]], dimension: int) -> str:
    """What sets a collection's fields apart from those `create` makes, or ""."""
    by_name = {field["name"]: field for field in fields}
    if sorted(by_name) != sorted(FIELDS):
        return f"has the fields {sorted(by_name)}, where this service makes {sorted(FIELDS)}"
    kind, dim = by_name["vector"].get("type"), int(by_name["vector"].get("params", {}).get("dim", 0))
    if kind != DataType.FLOAT_VECTOR or dim != dimension:
        named = getattr(kind, "name", kind)
        return f"holds {named} vectors of {dim} dimensions, not FLOAT_VECTOR ones of {dimension} (its stamp)"
    return ""


class Store:
    def __init__(
        self,
        uri: str,
        token: str,
        timeout_s: float,
        index_type: str,
        index_params: dict,
        observe: Callable[[str, float], None] = lambda operation, seconds: None,
        load_timeout_s: float = 600.0,
    ) -> None:
        self.uri = uri
        self._shown_uri = shown_uri(uri)  # for messages: without a password the URI carries
        self.observe = observe  # (operation, seconds) of every Milvus call, for metrics
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s
        self.index_type = index_type
        self.index_params = index_params
        self._collections: dict[str, CollectionInfo] = {}
        self._create_lock = threading.Lock()
        self._open_lock = threading.Lock()  # so that callers who find a collection unloaded wait for one load
        self._write_lock = threading.Lock()
        self._token = token
        self._reconnect_lock = threading.Lock()
        self._reconnect_needed = False
        self._client = self._connect()

    def _connect(self) -> MilvusClient:
        if is_milvus_lite(self.uri):
            check_lite_file(self.uri)
        try:
            # A connection of its own, not pymilvus's shared one, so that a reconnect replaces it whole.
            timeout = max(self.timeout_s, LITE_START_S) if is_milvus_lite(self.uri) else self.timeout_s
            return MilvusClient(uri=self.uri, token=self._token, timeout=timeout, dedicated=True)
        except MilvusException as error:
            if isinstance(error, ConnectionConfigException) and is_milvus_lite(self.uri):
                raise ServiceError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"cannot open the Milvus Lite file {self.uri}: {error.message}. Only one process at a "
                    "time may open a Milvus Lite file: stop the other one, or serve it from a Milvus server",
                ) from None
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, f"cannot reach Milvus at {self._shown_uri}: {error.message}"
            ) from None

    def _reconnect(self) -> None:
        """After a lost connection: a fresh client, once Milvus answers again. Milvus Lite runs in a process
        that this one started: that process has ended or is broken, so it is started again on the file."""
        with self._reconnect_lock:
            if not self._reconnect_needed:
                return
            if is_milvus_lite(self.uri):
                server_manager_instance.release_server(self.uri)
            stale, self._client = self._client, self._connect()
            self._reconnect_needed = False
        try:
            stale.close()
        except Exception:  # its connection is the broken one: the fresh client already serves
            log.debug("closing the stale Milvus client failed", exc_info=True)

    def close(self) -> None:
        self._client.close()

    def _call(
        self,
        operation: str,
        collection: str,
        call: Callable[[float], Result],
        expression: str = "",
        refused: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        timeout_s: float | None = None,
    ) -> Result:
        """Runs one Milvus call, timed, turning its failures into the status a caller should get. A call with
        a filter `expression` that Milvus fails, and not for want of a connection, failed for its filter:
        Milvus Lite checks some filters only while it runs them. Any other refusal gets `refused`.
        `call` gets its timeout: `timeout_s` (the usual one when None), or what is left of the caller's
        deadline if that is less (less the time for the answer to reach it: `Caller.answer_by`), so that no
        call works on for a caller who has given up, and the caller hears that Milvus did not answer."""
        what = f"{operation} {collection!r}" if collection else operation
        if self._reconnect_needed:
            self._reconnect()
        # Taken after a reconnect, which may itself take seconds (Lite started again, its file checked).
        timeout = min(timeout_s or self.timeout_s, current_caller().answer_by() - time.monotonic())
        if timeout <= 0:
            raise ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{what}: the caller's deadline passed before Milvus was asked",
            )
        started = time.perf_counter()
        try:
            return call(timeout)
        except MilvusUnavailableException as error:
            self._reconnect_needed = True
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, f"Milvus at {self._shown_uri} is unavailable: {error}"
            ) from None
        except MilvusException as error:
            if error.code == _MILVUS_CANNOT_CONNECT:
                self._reconnect_needed = True
            elif error.code == _MILVUS_COLLECTION_NOT_FOUND:
                raise ServiceError(grpc.StatusCode.NOT_FOUND, f"{what}: {error.message}") from None
            elif expression:
                raise invalid_argument(f"{what}: Milvus refused the filter: {error.message}") from None
            elif error.code == _MILVUS_INVALID_PARAMETER:
                raise invalid_argument(f"{what}: Milvus refused the request: {error.message}") from None
            raise ServiceError(refused, f"{what} failed in Milvus: {error.message}") from None
        except grpc.RpcError as error:  # pymilvus lets a server's deadline through as it is
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServiceError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{what}: Milvus at {self._shown_uri} did not answer within {timeout:.3g} s",
                ) from None
            self._reconnect_needed = True
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, f"{what}: Milvus at {self._shown_uri}: {error.details()}"
            ) from None
        finally:
            self.observe(operation, time.perf_counter() - started)

    def ping(self) -> None:
        self._call("list collections", "", lambda timeout: self._client.list_collections(timeout=timeout))

    def open_collection(self, name: str) -> CollectionInfo | None:
        """The collection's stamp, once it is loaded into memory for searches; None when it does not exist.
        The load (once per start) has a deadline of its own: Milvus Lite loads a large file for longer than
        a call's (Milvus Lite's other calls wait behind it meanwhile)."""
        if name in self._collections:
            return self._collections[name]
        if problem := collection_name_problem(name):
            raise invalid_argument(problem)
        with self._open_lock:
            if name not in self._collections:
                self._open(name)
        return self._collections.get(name)

    def _open(self, name: str) -> None:
        if not self._call(
            "has collection", name, lambda timeout: self._client.has_collection(name, timeout=timeout)
        ):
            return None
        description = self._call(
            "describe collection",
            name,
            lambda timeout: self._client.describe_collection(name, timeout=timeout),
        )
        try:
            stamp = json.loads(description["description"])
            info = CollectionInfo(name, stamp["model"], int(stamp["dimension"]))
        except (ValueError, KeyError, TypeError):
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"collection {name!r} was not made by this service (no model stamp); use another collection",
            ) from None
        if problem := _schema_problem(description.get("fields", []), info.dimension):
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"collection {name!r} {problem}; use another collection",
            )
        self._index(name)
        self._call(
            "load collection",
            name,
            lambda timeout: self._client.load_collection(name, timeout=timeout),
            timeout_s=self.load_timeout_s,
        )
        self._collections[name] = info

    def _index(self, name: str) -> None:
        """Indexes the vectors of a collection that has no index yet: one just made, or one whose indexing
        failed (then this service's --index-type and --index-params, now perhaps mended, are tried again)."""
        if self._call(
            "list indexes of", name, lambda timeout: self._client.list_indexes(name, timeout=timeout)
        ):
            index = self._index_description(name)
            if index.get("metric_type") != METRIC:
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"collection {name!r} indexes its vectors by {index.get('metric_type')}, where this "
                    f"service searches by {METRIC}; use another collection",
                )
            return
        index = MilvusClient.prepare_index_params()
        index.add_index("vector", index_type=self.index_type, metric_type=METRIC, params=self.index_params)
        self._call(
            f"index ({self.index_type} {json.dumps(self.index_params)}: --index-type, --index-params)",
            name,
            lambda timeout: self._client.create_index(name, index, timeout=timeout),
            refused=grpc.StatusCode.FAILED_PRECONDITION,
        )

    def require(self, name: str) -> CollectionInfo:
        info = self.open_collection(name)
        if info is None:
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND, f"collection {name!r} does not exist: ingest into it first"
            )
        return info

    def create(self, name: str, model: str, dimension: int) -> CollectionInfo:
        """The collection `name`, made for `model` if it does not exist yet."""
        with self._create_lock:
            existing = self.open_collection(name)
            if existing is not None:
                return existing
            schema = _schema(model, dimension)
            self._call(
                "create collection",
                name,
                lambda timeout: self._client.create_collection(
                    name, schema=schema, consistency_level=DECIDING, timeout=timeout
                ),
            )
            log.info("created collection %r for model %s (%s index)", name, model, self.index_type)
            return self.require(name)

    def existing_ids(self, name: str, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        rows = self._call(
            "look up ids in",
            name,
            lambda timeout: self._client.get(name, ids=ids, output_fields=["id"], timeout=timeout),
        )
        return {row["id"] for row in rows}

    def upsert(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Writes the rows, each replacing any row of its id."""
        self._write(name, rows, self._client.upsert)

    def _write(self, name: str, rows: list[dict[str, Any]], write: Callable[..., object]) -> None:
        if not rows:
            return
        try:
            # Timed as "upsert into" whichever call writes: to a reader of the metrics it is the one write of
            # rows by id (store_new's insert leaves what an upsert would).
            self._call("upsert into", name, lambda timeout: write(name, rows, timeout=timeout))
        except ServiceError as error:
            # UNAVAILABLE: a write that Milvus failed (not one it refused, or a deadline that passed)
            if error.code != grpc.StatusCode.UNAVAILABLE or not is_milvus_lite(self.uri):
                raise
            # Lite keeps the rows of a write that failed (a full disk) in memory, and pymilvus's retries add
            # them again each time: searches and "already stored?" checks would see rows that the file never
            # got, lost at the next start. Lite is started again on its file before the next call.
            self._reconnect_needed = True
            raise self._disk_full(error) or error from None

    def _disk_full(self, error: ServiceError) -> ServiceError | None:
        """`error` said as a full disk, where the Milvus Lite file's disk has little space left."""
        folder = Path(self.uri).resolve().parent
        free = shutil.disk_usage(folder).free
        if free >= LITE_LOW_SPACE_BYTES:
            return None
        return ServiceError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{error.message} ({folder}, where the Milvus Lite file is, has {free // 1024} KiB free: the "
            "disk is full; free space, then ingest again: what was kept is reported present)",
        )

    def store_new(self, name: str, rows: list[dict[str, Any]]) -> set[str]:
        """Writes the rows whose id is not stored yet; returns the ids that were (and are left alone).

        On Milvus Lite the ids are checked again and the new rows inserted under one lock, so two streams
        ingesting the same picture store it once: the file is open in this process alone, so nothing else
        writes between the two. An upsert would also do, but it deletes each id first, at a cost that grows
        with the collection (Lite's writes fell from 4,300 to 800 rows/s over the first 38,400 rows; inserts
        held 6,200-7,900, bench/search.py).

        On a Milvus server every row is upserted without a second check: the upsert keeps one row per id
        however many streams and replicas write it (tested), while a check there is a Strong read, which
        waits for the server's time tick: 200-400 ms a batch against 8 ms for the upsert, one batch at a
        time under a lock (bench/milvus_server.py). Two streams ingesting one picture at the same moment may
        then both report it stored, as two replicas always could.
        """
        if not is_milvus_lite(self.uri):
            self.upsert(name, rows)
            return set()
        with self._write_lock:
            present = self.existing_ids(name, [row["id"] for row in rows])
            self._write(name, [row for row in rows if row["id"] not in present], self._client.insert)
        return present

    def search(
        self,
        name: str,
        vector: list[float],
        top_k: int,
        offset: int,
        expression: str,
        output_fields: list[str],
    ) -> list[dict[str, Any]]:
        results = self._call(
            "search",
            name,
            lambda timeout: self._client.search(
                name,
                data=[vector],
                anns_field="vector",
                limit=top_k,
                offset=offset,
                filter=expression,
                output_fields=output_fields,
                search_params={"metric_type": METRIC, "params": {}},
                consistency_level=SHOWN,
                timeout=timeout,
            ),
            expression,
        )
        return list(results[0])

    def get(
        self, name: str, ids: list[str], output_fields: list[str], consistency: str = DECIDING
    ) -> list[dict[str, Any]]:
        return self._call(
            "get from",
            name,
            lambda timeout: self._client.get(
                name,
                ids=ids,
                output_fields=output_fields,
                consistency_level=consistency,
                timeout=timeout,
            ),
        )

    def count(self, name: str, expression: str = "", consistency: str = DECIDING) -> int:
        rows = self._call(
            "count",
            name,
            lambda timeout: self._client.query(
                name,
                filter=expression,
                output_fields=["count(*)"],
                consistency_level=consistency,
                timeout=timeout,
            ),
            expression,
        )
        return int(rows[0]["count(*)"])

    def delete(
        self,
        name: str,
        expression: str,
        deleted_batch: Callable[[list[str]], None],
        each_batch: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> int:
        """Deletes the rows that match `expression`, found first, a batch at a time, and counts them;
        `deleted_batch` gets each batch's ids once Milvus deleted it, both inside `each_batch()`. A failure
        part-way says how many rows were deleted before it."""
        deleted: set[str] = set()
        try:
            while batch := self._ids_matching(name, expression, DELETE_BATCH):
                if not deleted.isdisjoint(batch):  # never loop forever on rows Milvus did not delete
                    raise ServiceError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"delete from {name!r}: Milvus still holds rows it deleted",
                    )
                with each_batch():
                    self._delete_ids(name, batch)
                    deleted.update(batch)
                    deleted_batch(batch)
        except ServiceError as error:
            if not deleted:
                raise
            done = f"{len(deleted)} matching pictures were deleted before it; delete again for the rest"
            raise ServiceError(error.code, f"{error.message} ({done})") from None
        return len(deleted)

    def _ids_matching(self, name: str, expression: str, limit: int) -> list[str]:
        rows = self._call(
            "find ids in",
            name,
            lambda timeout: self._client.query(
                name, filter=expression, output_fields=["id"], limit=limit, timeout=timeout
            ),
            expression,
        )
        return [row["id"] for row in rows]

    def _delete_ids(self, name: str, ids: list[str]) -> None:
        self._call("delete from", name, lambda timeout: self._client.delete(name, ids=ids, timeout=timeout))

    def _index_description(self, name: str) -> dict[str, Any]:
        index = self._call(
            "describe index of",
            name,
            lambda timeout: self._client.describe_index(name, index_name="vector", timeout=timeout),
        )
        return index or {}

    def describe_index(self, name: str) -> str:
        return str(self._index_description(name).get("index_type", self.index_type))

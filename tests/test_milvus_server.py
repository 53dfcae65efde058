"""The search service against a real Milvus standalone server (the `milvus` package), not only Milvus Lite."""

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from conftest import running_search, search_stub
from milvus import MilvusServer
from test_search import PRESENT, STORED, folder, ingest, options

from imagesearch.v1 import search_pb2


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory) -> Iterator[str]:
    server = MilvusServer()
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus-standalone")))
    server.start()  # waits for its health endpoint
    try:
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()  # SIGTERM, then SIGKILL after a grace period: it can hang on SIGTERM alone


def test_ingest_search_and_delete_on_a_milvus_server(tiny_encoder, milvus_uri, tmp_path) -> None:
    with (
        running_search(tiny_encoder.grpc.address, milvus_uri, thumbnail_dir=str(tmp_path)) as server,
        search_stub(server.grpc.address) as stub,
    ):
        assert server.check_health() is True
        pictures = folder(6, prefix="server")
        assert {r.outcome for r in ingest(stub, pictures, metadata={"tag": 'quote " and \\'})} == {STORED}
        assert {r.outcome for r in ingest(stub, pictures)} == {PRESENT}

        uri, image = pictures[2]
        hits = stub.SearchImage(search_pb2.SearchImageRequest(image=image, options=options(""))).hits
        assert hits[0].record.uri == uri and hits[0].score == pytest.approx(1.0, abs=1e-4)

        tagged = search_pb2.SearchTextRequest(
            text="a picture",
            options=options(
                "",
                filter='metadata["tag"] == {tag}',
                filter_params={"tag": search_pb2.FilterValue(string_value='quote " and \\')},
            ),
        )
        assert len(stub.SearchText(tagged).hits) == 6

        deleted = stub.Delete(search_pb2.DeleteRequest(filter='uri in ["server/0.png", "server/1.png"]'))
        assert deleted.deleted == 2
        stats = stub.Stats(search_pb2.StatsRequest())
        assert stats.count == 4 and stats.model.startswith("tiny.pt@sha256:")


def test_two_replicas_ingesting_the_same_pictures_at_once_store_each_once(
    tiny_encoder, milvus_uri, tmp_path
) -> None:
    """On a Milvus server, upserts of one id by two replicas, two streams each, must leave one row."""
    pictures = folder(40, 500, prefix="replicas")
    with (
        running_search(tiny_encoder.grpc.address, milvus_uri, thumbnail_dir=str(tmp_path)) as first,
        running_search(tiny_encoder.grpc.address, milvus_uri, thumbnail_dir=str(tmp_path)) as second,
        search_stub(first.grpc.address) as first_stub,
        search_stub(second.grpc.address) as second_stub,
    ):
        start = threading.Barrier(4)

        def run(stub) -> list[search_pb2.IngestResponse]:  # type: ignore[no-untyped-def]
            start.wait()
            return ingest(stub, pictures, collection="replicas")

        with ThreadPoolExecutor(4) as pool:
            runs = list(pool.map(run, [first_stub, second_stub, first_stub, second_stub]))
        assert all(run[-1].totals.stored + run[-1].totals.present == 40 for run in runs)
        assert first_stub.Stats(search_pb2.StatsRequest(collection="replicas")).count == 40
        ids = [
            hit.record.id
            for hit in first_stub.SearchText(
                search_pb2.SearchTextRequest(text="a picture", options=options("replicas", top_k=100))
            ).hits
        ]
        assert len(ids) == len(set(ids)) == 40


def test_a_delete_on_another_replica_leaves_no_thumbnail_of_a_picture_it_deleted(
    tiny_encoder, milvus_uri, tmp_path, monkeypatch
) -> None:
    """Replicas share the thumbnails folder, but not the lock that keeps one replica's deletes from coming
    between an ingest batch's rows and their thumbnails. A delete on another replica right after a batch's
    rows were written left their thumbnails, served for good; now they are in place before the rows."""
    with (
        running_search(tiny_encoder.grpc.address, milvus_uri, thumbnail_dir=str(tmp_path)) as first,
        running_search(tiny_encoder.grpc.address, milvus_uri, thumbnail_dir=str(tmp_path)) as second,
        search_stub(first.grpc.address) as first_stub,
        search_stub(second.grpc.address) as second_stub,
    ):
        store_new, deleted = first.store.store_new, []

        def then_deleted_by_the_other_replica(name: str, rows: list[dict[str, Any]]) -> set[str]:
            present = store_new(name, rows)
            request = search_pb2.DeleteRequest(collection="raced", ids=[row["id"] for row in rows])
            deleted.append(second_stub.Delete(request).deleted)
            return present

        monkeypatch.setattr(first.store, "store_new", then_deleted_by_the_other_replica)
        results = ingest(first_stub, folder(3, 900, prefix="raced"), collection="raced")
        ids = [result.id for result in results]
        assert {result.outcome for result in results} == {STORED} and sum(deleted) == 3
        assert not first_stub.Get(search_pb2.GetRequest(collection="raced", ids=ids)).records
        for stub, image_id in itertools.product((first_stub, second_stub), ids):
            request = search_pb2.GetThumbnailRequest(collection="raced", id=image_id)
            with pytest.raises(grpc.RpcError) as missing:
                stub.GetThumbnail(request)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert not list((tmp_path / "raced").iterdir())

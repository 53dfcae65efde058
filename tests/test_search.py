"""The search service with real encoder servers and real Milvus Lite files, over gRPC on loopback."""

import contextlib
import hashlib
import itertools
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from conftest import running_encoder, running_search, search_stub, wait_for_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st
from images import png
from PIL import Image
from pymilvus import MilvusException

from client.local import free_port
from encoder_service.config import EncoderConfig
from encoder_service.server import EncoderServer
from imagesearch.errors import ServiceError
from imagesearch.v1 import search_pb2
from search_service.config import SearchConfig
from search_service.filters import render_filter, render_value
from search_service.lite_file import check_lite_file
from search_service.metadata import record_metadata
from search_service.server import SearchServer

STORED, PRESENT, FAILED = search_pb2.OUTCOME_STORED, search_pb2.OUTCOME_PRESENT, search_pb2.OUTCOME_FAILED


def picture(seed: int) -> bytes:
    """A distinct noise picture per seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    return png(Image.fromarray(pixels))


def requests(
    images: Iterable[tuple[str, bytes]], collection: str = "", metadata: dict[str, str] | None = None
) -> Iterator[search_pb2.IngestRequest]:
    for uri, image in images:
        yield search_pb2.IngestRequest(collection=collection, image=image, uri=uri, metadata=metadata or {})


def ingest(stub, images: Iterable[tuple[str, bytes]], **options) -> list[search_pb2.IngestResponse]:
    return list(stub.Ingest(requests(images, **options)))


def folder(count: int, first_seed: int = 0, prefix: str = "pics") -> list[tuple[str, bytes]]:
    return [(f"{prefix}/{seed}.png", picture(seed)) for seed in range(first_seed, first_seed + count)]


def options(collection: str, **fields) -> search_pb2.SearchOptions:
    return search_pb2.SearchOptions(collection=collection, **fields)


def test_ingest_stores_each_picture_and_reports_each_item(stub, collection) -> None:
    pictures = folder(24)
    results = ingest(stub, pictures, collection=collection)
    assert [r.index for r in results] == list(range(24))
    assert [r.uri for r in results] == [uri for uri, _ in pictures]
    assert [r.id for r in results] == [hashlib.sha256(image).hexdigest() for _, image in pictures]
    assert {r.outcome for r in results} == {STORED}
    assert results[-1].totals == search_pb2.IngestTotals(received=24, stored=24)
    stats = stub.Stats(search_pb2.StatsRequest(collection=collection))
    assert (stats.count, stats.dimension, stats.metric_type) == (24, 512, "COSINE")
    assert stats.model.startswith("tiny.pt@sha256:")


def test_ingest_twice_stores_once_and_reports_present(stub, collection) -> None:
    pictures = folder(10)
    ingest(stub, pictures, collection=collection)
    again = ingest(stub, pictures, collection=collection)
    assert {r.outcome for r in again} == {PRESENT}
    assert again[-1].totals == search_pb2.IngestTotals(received=10, present=10)
    assert stub.Stats(search_pb2.StatsRequest(collection=collection)).count == 10


def test_concurrent_streams_of_the_same_pictures_store_each_once(stub, collection) -> None:
    pictures = folder(20, 300)
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: ingest(stub, pictures, collection=collection), range(4)))
    assert sum(run[-1].totals.stored for run in runs) == 20
    assert all(run[-1].totals.stored + run[-1].totals.present == 20 for run in runs)
    assert stub.Stats(search_pb2.StatsRequest(collection=collection)).count == 20


def test_ingest_streams_beyond_the_limit_get_resource_exhausted(tiny_encoder, tmp_path) -> None:
    release = threading.Event()

    def held_open() -> Iterator[search_pb2.IngestRequest]:
        yield from requests(folder(1, 400))
        release.wait(timeout=60)

    with (
        running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db", max_concurrent_ingests=1) as search,
        search_stub(search.grpc.address) as stub,
    ):
        first = stub.Ingest(held_open())
        assert next(first).outcome == STORED  # the first stream holds the only slot
        with pytest.raises(grpc.RpcError) as refused:
            ingest(stub, folder(1, 401))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        assert list(first) == []
        assert [r.outcome for r in ingest(stub, folder(1, 401))] == [STORED]


def test_a_stream_gone_quiet_is_ended_and_frees_its_slot(tiny_encoder, tmp_path) -> None:
    """A client that stopped sending (and never closed its stream) held its ingest slot for good: with them
    all held, every other ingest was RESOURCE_EXHAUSTED."""
    release = threading.Event()

    def gone_quiet() -> Iterator[search_pb2.IngestRequest]:
        yield from requests(folder(1, 410))
        release.wait(timeout=60)

    with (
        running_search(
            tiny_encoder.grpc.address,
            tmp_path / "milvus.db",
            max_concurrent_ingests=1,
            ingest_idle_timeout_s=1.0,
        ) as search,
        search_stub(search.grpc.address) as stub,
    ):
        quiet = stub.Ingest(gone_quiet())
        try:
            assert next(quiet).outcome == STORED
            with pytest.raises(grpc.RpcError) as ended:
                next(quiet)
        finally:
            release.set()
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert ended.value.details().startswith("no picture came for 1 s (--ingest-idle-timeout-s)")
        assert [r.outcome for r in ingest(stub, folder(1, 411))] == [STORED]


def test_a_stream_holds_no_more_picture_bytes_at_once_than_its_buffer(
    tiny_encoder, tmp_path, monkeypatch
) -> None:
    """A stream's memory was bounded only by a count of pictures: 448 of them, each of up to 64 MiB. With a
    buffer smaller than one picture, each is read only once the one before it is answered."""
    calls: list[int] = []
    with (
        running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db", ingest_buffer_bytes=1) as search,
        search_stub(search.grpc.address) as stub,
    ):
        encode_images = search.servicer.encoder.encode_images

        def counted(images: list[bytes]):  # type: ignore[no-untyped-def]
            calls.append(len(images))
            return encode_images(images)

        monkeypatch.setattr(search.servicer.encoder, "encode_images", counted)
        results = ingest(stub, folder(6, 420))
    assert [r.outcome for r in results] == [STORED] * 6 and calls == [1] * 6


def test_same_picture_under_two_paths_is_stored_once(stub, collection) -> None:
    image = picture(7)
    results = ingest(stub, [("a/7.png", image), ("b/copy-of-7.png", image)], collection=collection)
    assert [r.outcome for r in results] == [STORED, PRESENT]
    assert results[0].id == results[1].id == hashlib.sha256(image).hexdigest()
    records = stub.Get(search_pb2.GetRequest(collection=collection, ids=[results[0].id])).records
    assert [record.uri for record in records] == ["a/7.png"]


def test_a_request_naming_another_collection_than_its_streams_fails_alone(stub, collection) -> None:
    """It was stored in the stream's collection without a word: a picture filed where nobody looks."""
    sent = [
        search_pb2.IngestRequest(collection=collection, image=picture(11), uri="a.png"),
        search_pb2.IngestRequest(collection=f"{collection}_other", image=picture(12), uri="b.png"),
        search_pb2.IngestRequest(image=picture(13), uri="c.png"),  # none named: the stream's
    ]
    results = list(stub.Ingest(iter(sent)))
    assert [r.outcome for r in results] == [STORED, FAILED, STORED]
    assert results[1].error == (
        f"collection '{collection}_other' is not this stream's '{collection}' (its first request's): "
        "one stream ingests into one collection"
    )
    assert stub.Stats(search_pb2.StatsRequest(collection=collection)).count == 2


def test_an_empty_metadata_key_fails_its_item(stub, collection) -> None:
    """Milvus stores it, but refuses every filter that names it."""
    sent = [
        search_pb2.IngestRequest(collection=collection, image=picture(14), uri="a.png", metadata={"": "x"}),
        search_pb2.IngestRequest(
            collection=collection,
            image=picture(15),
            uri="b.png",
            typed_metadata={"": search_pb2.FilterValue(int_value=1)},
        ),
    ]
    results = list(stub.Ingest(iter(sent)))
    assert [(r.outcome, r.error) for r in results] == [
        (FAILED, "metadata key '' is empty: no filter could name it")
    ] * 2


def test_a_list_inside_a_list_fails_its_item_and_every_search_still_reads(stub, collection) -> None:
    """A list nested 49 deep was stored, and then every search that found it failed: its answer nested past
    the 100 levels protobuf reads."""
    tags = search_pb2.FilterValue(
        list_value=search_pb2.FilterValueList(values=[search_pb2.FilterValue(string_value="dog")])
    )
    nested = search_pb2.FilterValue(list_value=search_pb2.FilterValueList(values=[tags]))
    sent = [
        search_pb2.IngestRequest(
            collection=collection, image=picture(16), uri="a.png", typed_metadata={"deep": nested}
        ),
        search_pb2.IngestRequest(
            collection=collection, image=picture(17), uri="b.png", typed_metadata={"tags": tags}
        ),
    ]
    results = list(stub.Ingest(iter(sent)))
    assert [(r.outcome, r.error) for r in results] == [
        (FAILED, "typed_metadata['deep'] holds a list inside a list: a value is a scalar or a list of them"),
        (STORED, ""),
    ]
    found = stub.SearchText(search_pb2.SearchTextRequest(text="a", options=options(collection)))
    assert [(hit.record.uri, list(hit.record.typed_metadata)) for hit in found.hits] == [("b.png", ["tags"])]


def test_a_stored_value_deeper_than_a_list_of_scalars_is_answered_as_its_json() -> None:
    """As another writer (or an earlier version) may have stored it: typed, it would nest without bound."""
    text, typed = record_metadata({"deep": [[[1]], 2], "tags": ["dog", 3]})
    assert text == {"deep": "[[[1]], 2]", "tags": '["dog", 3]'}
    assert typed["deep"] == search_pb2.FilterValue(string_value="[[[1]], 2]")
    assert [value.WhichOneof("kind") for value in typed["tags"].list_value.values] == [
        "string_value",
        "int_value",
    ]


def test_an_answer_over_the_message_limit_is_refused_saying_how_many_fit(tiny_encoder, tmp_path) -> None:
    """gRPC failed it with its own RESOURCE_EXHAUSTED ("Sent message larger than max"), naming nothing to
    change: top_k hits or ids with metadata near its 64 KiB limit (carried twice, as text and typed)."""
    limit = 1 << 20
    with (
        running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db", max_message_bytes=limit) as server,
        search_stub(server.grpc.address) as stub,
    ):
        stored = ingest(stub, folder(20), metadata={"notes": "x" * 60_000})
        assert [result.outcome for result in stored] == [STORED] * 20
        too_many = search_pb2.SearchTextRequest(text="a picture", options=search_pb2.SearchOptions(top_k=20))
        with pytest.raises(grpc.RpcError) as refused:
            stub.SearchText(too_many)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        said = refused.value.details()
        assert said.startswith(
            f"top_k = 20: the answer would be over the search service's message limit of {limit} bytes"
        )
        fit = int(re.fullmatch(r".*; at most (\d+) fit", said)[1])
        assert 0 < fit < 20
        fitting = search_pb2.SearchTextRequest(text="a picture", options=search_pb2.SearchOptions(top_k=fit))
        assert len(stub.SearchText(fitting).hits) == fit
        with pytest.raises(grpc.RpcError) as refused:
            stub.Get(search_pb2.GetRequest(ids=[result.id for result in stored]))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == said.replace("top_k = 20", "20 ids")


def test_a_picture_sent_again_after_its_answer_in_one_stream_is_present_or_fails_alike(
    stub, collection
) -> None:
    """A copy sent after the stream answered the first (which the stream by then no longer holds, so that
    its memory stays flat: bench/load.py) is answered as the first was: present once stored, failed for the
    same reason once refused."""
    image, broken = picture(8), png(Image.new("RGB", (8, 8)))[:40]
    first_two_answered = threading.Event()

    def sent() -> Iterator[search_pb2.IngestRequest]:
        yield from requests([("a/8.png", image), ("a/broken.png", broken)], collection=collection)
        first_two_answered.wait(timeout=60)
        yield from requests([("b/8-again.png", image), ("b/broken-again.png", broken)], collection=collection)

    results = []
    for response in stub.Ingest(sent()):
        results.append(response)
        if len(results) == 2:
            first_two_answered.set()
    assert [r.outcome for r in results] == [STORED, FAILED, PRESENT, FAILED]
    assert results[2].id == results[0].id == hashlib.sha256(image).hexdigest()
    assert results[3].id == results[1].id and results[3].error == results[1].error != ""
    assert results[-1].totals == search_pb2.IngestTotals(received=4, stored=1, present=1, failed=2)
    assert stub.Stats(search_pb2.StatsRequest(collection=collection)).count == 1


def test_a_picture_searched_for_by_itself_comes_first(stub, collection) -> None:
    pictures = folder(12)
    ingest(stub, pictures, collection=collection)
    for uri, image in pictures[:3]:
        hits = stub.SearchImage(search_pb2.SearchImageRequest(image=image, options=options(collection))).hits
        assert hits[0].record.uri == uri
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].score > hits[1].score


def test_text_search_returns_ranked_hits_with_metadata(stub, collection) -> None:
    ingest(stub, folder(6), collection=collection, metadata={"album": "holiday"})
    response = stub.SearchText(
        search_pb2.SearchTextRequest(text="a white dog", options=options(collection, top_k=4))
    )
    scores = [hit.score for hit in response.hits]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    assert {hit.record.metadata["album"] for hit in response.hits} == {"holiday"}
    assert response.model.startswith("tiny.pt@sha256:")


def test_offset_and_top_k_paginate(stub, collection) -> None:
    ingest(stub, folder(10), collection=collection)

    def page(top_k: int, offset: int) -> list[str]:
        request = search_pb2.SearchTextRequest(
            text="noise", options=options(collection, top_k=top_k, offset=offset)
        )
        return [hit.record.id for hit in stub.SearchText(request).hits]

    everything = page(10, 0)
    assert page(4, 0) + page(4, 4) + page(4, 8) == everything


def test_a_bad_picture_fails_alone(stub, collection) -> None:
    pictures = [
        *folder(3),
        ("notes.jpg", b"just some text, named like a picture"),
        ("empty.png", b""),
        *folder(3, 3),
    ]
    results = ingest(stub, pictures, collection=collection)
    assert [r.outcome for r in results] == [STORED] * 3 + [FAILED, FAILED] + [STORED] * 3
    assert results[3].error.startswith("not a recognised image format")
    assert results[4].error == "empty image (0 bytes)"
    assert results[-1].totals == search_pb2.IngestTotals(received=8, stored=6, failed=2)
    assert stub.Stats(search_pb2.StatsRequest(collection=collection)).count == 6


def test_a_row_that_milvus_refuses_fails_its_item_and_the_stream_goes_on(
    search, stub, collection, monkeypatch
) -> None:
    """A refused batch write used to end the whole stream with INVALID_ARGUMENT naming no item. Milvus is
    made to refuse one row (no real picture was found that it refuses: the service checks uris, metadata and
    vectors before writing)."""
    milvus_insert = search.store._client.insert

    def refuses_one_row(name, rows, **kwargs):  # type: ignore[no-untyped-def]
        if any(row["uri"] == "pics/1.png" for row in rows):
            raise MilvusException(code=1100, message="injected: a row Milvus refuses")
        return milvus_insert(name, rows, **kwargs)

    monkeypatch.setattr(search.store._client, "insert", refuses_one_row)
    results = ingest(stub, folder(4), collection=collection)
    assert [r.outcome for r in results] == [STORED, FAILED, STORED, STORED]
    assert results[1].error.endswith("Milvus refused the request: injected: a row Milvus refuses")
    assert results[-1].totals == search_pb2.IngestTotals(received=4, stored=3, failed=1)
    assert stub.Stats(search_pb2.StatsRequest(collection=collection)).count == 3
    # No thumbnail of the picture whose row was refused: it would be served for an id that is not stored.
    thumbnails = search.servicer.thumbnails.folder / collection
    assert sorted(path.stem for path in thumbnails.iterdir()) == sorted(
        r.id for r in results if r.outcome == STORED
    )


def test_an_ingest_cancelled_before_its_first_picture_is_no_defect(tiny_encoder, tmp_path, caplog) -> None:
    """A caller gone before its first picture (Ctrl-C while its files were listed) was logged as a failure
    no handler expected, with a traceback, and answered INTERNAL."""
    caplog.set_level(logging.INFO, logger="imagesearch.access")
    release = threading.Event()

    def nothing_yet() -> Iterator[search_pb2.IngestRequest]:
        release.wait(timeout=60)
        yield from ()

    with (
        running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db", max_concurrent_ingests=1) as search,
        search_stub(search.grpc.address) as stub,
    ):

        def slot_free() -> bool:
            """Whether a one-picture ingest went through, where a stream holding the only slot refuses it."""
            try:
                return bool(ingest(stub, folder(1, 420)))
            except grpc.RpcError as refused:
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return False

        waiting = stub.Ingest(nothing_yet())
        assert any(not slot_free() for _ in range(1000))  # its handler runs: it holds the slot
        waiting.cancel()
        release.set()
        assert any(slot_free() for _ in range(1000))  # its handler has ended
    ended = [r.getMessage() for r in caplog.records if r.name == "imagesearch.access"]
    assert "Ingest CANCELLED" in ended
    assert not [r for r in caplog.records if r.name == "imagesearch.errors"]


def test_delete_by_id_and_by_filter(stub, collection) -> None:
    ingest(stub, folder(4, prefix="cats"), collection=collection)
    dogs = ingest(stub, folder(3, 4, prefix="dogs"), collection=collection)
    deleted = stub.Delete(search_pb2.DeleteRequest(collection=collection, ids=[dogs[0].id]))
    assert deleted.deleted == 1
    by_filter = stub.Delete(
        search_pb2.DeleteRequest(
            collection=collection,
            filter="uri like {prefix}",
            filter_params={"prefix": search_pb2.FilterValue(string_value="dogs/%")},
        )
    )
    assert by_filter.deleted == 2
    assert stub.Stats(search_pb2.StatsRequest(collection=collection)).count == 4
    assert stub.Get(search_pb2.GetRequest(collection=collection, ids=[d.id for d in dogs])).records == []


def tag_filter(collection: str, tag: str) -> search_pb2.SearchTextRequest:
    return search_pb2.SearchTextRequest(
        text="anything",
        options=options(
            collection,
            top_k=100,
            filter='metadata["tag"] == {tag}',
            filter_params={"tag": search_pb2.FilterValue(string_value=tag)},
        ),
    )


def test_filter_params_cannot_inject_expression_text(stub, collection) -> None:
    hostile = 'x" or 1==1 or uri != "'
    ingest(stub, folder(3, prefix="plain"), collection=collection, metadata={"tag": "plain"})
    ingest(stub, folder(2, 3, prefix="quoted"), collection=collection, metadata={"tag": hostile})
    assert len(stub.SearchText(tag_filter(collection, "x")).hits) == 0
    assert {h.record.uri.split("/")[0] for h in stub.SearchText(tag_filter(collection, hostile)).hits} == {
        "quoted"
    }
    assert len(stub.SearchText(tag_filter(collection, "plain")).hits) == 3


def test_output_fields_may_name_what_always_comes(stub, collection) -> None:
    """id, uri and metadata come with every hit and record: naming them was refused as "not fields"."""
    ingest(stub, folder(1), collection=collection, metadata={"tag": "a"})
    asked = options(collection, output_fields=["uri", "metadata", "id", "model"])
    record = stub.SearchText(search_pb2.SearchTextRequest(text="a", options=asked)).hits[0].record
    assert (record.uri, record.metadata["tag"], len(record.vector)) == ("pics/0.png", "a", 0)
    assert record.model and record.id
    got = stub.Get(search_pb2.GetRequest(collection=collection, ids=[record.id], output_fields=["uri"]))
    assert [record.uri for record in got.records] == ["pics/0.png"]


def test_bad_requests_get_invalid_argument_naming_the_problem(stub, collection) -> None:
    ingest(stub, folder(2), collection=collection)
    bad_requests = {
        "top_k = 5000 is outside 1..1000": options(collection, top_k=5000),
        "offset = -1 is outside 0..10000": options(collection, offset=-1),
        "filter uses {tag} but filter_params has no 'tag'": options(collection, filter="uri == {tag}"),
        "output_fields ['secret'] are not fields": options(collection, output_fields=["secret"]),
        "filter has a stray '{'": options(collection, filter="uri == {"),
        "filter has '=' after '==', where a value belongs": options(collection, filter="uri === 3"),
        "Invalid expr": options(collection, filter="uri == 3"),  # Milvus's own reason: a text is no number
    }
    for message, bad in bad_requests.items():
        with pytest.raises(grpc.RpcError) as error:
            stub.SearchText(search_pb2.SearchTextRequest(text="a dog", options=bad))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in error.value.details()
    with pytest.raises(grpc.RpcError) as missing:
        stub.Stats(search_pb2.StatsRequest(collection="no_such_collection"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'no_such_collection' does not exist" in missing.value.details()


def test_a_collection_name_milvus_would_refuse_is_refused_as_a_name(stub) -> None:
    """Milvus's own words were "refused the filter", on requests that had none."""
    for call in (
        lambda: stub.Stats(search_pb2.StatsRequest(collection="my-photos")),
        lambda: ingest(stub, folder(1), collection="my-photos"),
        lambda: stub.SearchText(search_pb2.SearchTextRequest(text="a", options=options("2024"))),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "is not one Milvus takes: a letter or _" in refused.value.details()


def test_a_refusal_that_quotes_a_long_input_is_still_invalid_argument(stub, collection) -> None:
    """gRPC cannot carry a status message over 16 KiB: the caller got RESOURCE_EXHAUSTED "Stream removed"."""
    ingest(stub, folder(1), collection=collection)
    uris = search_pb2.FilterValue(
        list_value=search_pb2.FilterValueList(
            values=[search_pb2.FilterValue(string_value=f"/photos/{index:05d}.jpg") for index in range(1000)]
        )
    )
    long_requests = [
        lambda: stub.Get(search_pb2.GetRequest(collection=collection, ids=["x" * 20000])),
        lambda: stub.SearchText(
            search_pb2.SearchTextRequest(
                text="a", options=options(collection, filter="url in {uris}", filter_params={"uris": uris})
            )
        ),
    ]
    for call in long_requests:
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "characters left out" in refused.value.details()


def test_a_list_of_whole_numbers_and_fractions_filters_on_milvus_lite(stub, collection) -> None:
    """Milvus Lite failed such a list with an internal assertion; as fractions, it matches whole numbers."""
    for seed, year in ((10, 2021), (11, 2023)):
        request = search_pb2.IngestRequest(
            collection=collection,
            image=picture(seed),
            uri=f"{year}.png",
            typed_metadata={"year": search_pb2.FilterValue(int_value=year)},
        )
        assert [result.outcome for result in stub.Ingest(iter([request]))] == [STORED]
    years = search_pb2.FilterValue(
        list_value=search_pb2.FilterValueList(
            values=[search_pb2.FilterValue(int_value=2021), search_pb2.FilterValue(float_value=2022.5)]
        )
    )
    found = stub.SearchText(
        search_pb2.SearchTextRequest(
            text="a",
            options=options(collection, filter='metadata["year"] in {years}', filter_params={"years": years}),
        )
    )
    assert [hit.record.uri for hit in found.hits] == ["2021.png"]


def test_two_encoder_replicas_share_the_ingest(tiny_path, tmp_path) -> None:
    with (
        running_encoder(tiny_path, max_items_per_request=4) as first,
        running_encoder(tiny_path, max_items_per_request=4) as second,
    ):
        target = f"{first.grpc.address},{second.grpc.address}"
        with (
            running_search(target, tmp_path / "milvus.db") as server,
            search_stub(server.grpc.address) as stub,
        ):
            results = ingest(stub, folder(24))
        assert {r.outcome for r in results} == {STORED}
        encoded = [replica.servicer.runtime.images.items_processed for replica in (first, second)]
    assert sum(encoded) == 24 and min(encoded) > 0, encoded


def test_encoder_lost_mid_ingest_then_back(tiny_path, tmp_path) -> None:
    port = free_port()
    pictures = folder(16)
    first_results = threading.Event()
    encoder = EncoderServer(
        EncoderConfig(model=str(tiny_path), device="cpu", port=port, metrics_port=0, max_items_per_request=4)
    )
    encoder.start()
    encoder.load()

    def stream() -> Iterator[search_pb2.IngestRequest]:
        yield from requests(pictures[:4])
        first_results.wait(timeout=60)
        encoder.stop()
        yield from requests(pictures[4:])

    with (
        running_search(f"127.0.0.1:{port}", tmp_path / "milvus.db", encoder_timeout_s=5.0) as search,
        search_stub(search.grpc.address) as stub,
    ):
        reported: list[search_pb2.IngestResponse] = []
        with pytest.raises(grpc.RpcError) as lost:
            for result in stub.Ingest(stream()):
                reported.append(result)
                first_results.set()
        assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"encoder at 127.0.0.1:{port}" in lost.value.details()
        assert reported and {r.outcome for r in reported} == {STORED}
        stored = [r.id for r in reported]
        assert len(stub.Get(search_pb2.GetRequest(ids=stored)).records) == len(stored)
        assert search.check_health() is False

        with running_encoder(tiny_path, port=port, max_items_per_request=4):
            assert search.check_health() is True
            rerun = ingest(stub, pictures)
        assert rerun[-1].totals == search_pb2.IngestTotals(
            received=16, present=len(stored), stored=16 - len(stored)
        )
        assert stub.Stats(search_pb2.StatsRequest()).count == 16


def test_restart_on_the_same_file_keeps_everything(tiny_encoder, tmp_path) -> None:
    milvus = tmp_path / "milvus.db"
    with (
        running_search(tiny_encoder.grpc.address, milvus) as server,
        search_stub(server.grpc.address) as stub,
    ):
        ids = [r.id for r in ingest(stub, folder(5))]
    with (
        running_search(tiny_encoder.grpc.address, milvus) as server,
        search_stub(server.grpc.address) as stub,
    ):
        assert stub.Stats(search_pb2.StatsRequest()).count == 5
        assert [record.id for record in stub.Get(search_pb2.GetRequest(ids=ids)).records] == ids
        assert {r.outcome for r in ingest(stub, folder(5))} == {PRESENT}


def test_the_same_checkpoint_under_another_name_serves_its_collection(
    tiny_encoder, tiny_path, tmp_path
) -> None:
    """The model's name holds its file's name: a checkpoint moved or copied (into a volume) was refused as
    another model, locking its collection away."""
    milvus, moved = tmp_path / "milvus.db", tmp_path / "volume" / "moved.pt"
    moved.parent.mkdir()
    moved.write_bytes(tiny_path.read_bytes())
    with (
        running_search(tiny_encoder.grpc.address, milvus) as server,
        search_stub(server.grpc.address) as stub,
    ):
        ids = [r.id for r in ingest(stub, folder(2))]
    with (
        running_encoder(moved) as other,
        running_search(other.grpc.address, milvus) as server,
        search_stub(server.grpc.address) as stub,
    ):
        assert stub.Stats(search_pb2.StatsRequest()).model.startswith("tiny.pt@sha256:")
        hits = stub.SearchText(search_pb2.SearchTextRequest(text="a dog")).hits
        assert sorted(hit.record.id for hit in hits) == sorted(ids)
        assert {r.outcome for r in ingest(stub, folder(3))} == {PRESENT, STORED}


def test_a_collection_of_another_model_is_refused(
    tiny_encoder, tiny_torchscript_path, tmp_path, caplog
) -> None:
    milvus = tmp_path / "milvus.db"
    with (
        running_search(tiny_encoder.grpc.address, milvus) as server,
        search_stub(server.grpc.address) as stub,
    ):
        ingest(stub, folder(2))
    with (
        running_encoder(tiny_torchscript_path) as other,
        running_search(other.grpc.address, milvus) as server,
        search_stub(server.grpc.address) as stub,
    ):
        for call in (
            lambda: ingest(stub, folder(1, 50)),
            lambda: stub.SearchText(search_pb2.SearchTextRequest(text="a dog")),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "tiny.pt@sha256:" in refused.value.details()
            assert "tiny.torchscript.pt@sha256:" in refused.value.details()
        assert stub.Stats(search_pb2.StatsRequest()).count == 2
        # Health stays SERVING (other collections may serve this model), and says why this one fails.
        assert server.check_health() is True
        said = [r.getMessage() for r in caplog.records if r.name == "search_service.server"]
        assert any(
            m.startswith("health: collection 'images' holds vectors of model 'tiny.pt@sha256:") for m in said
        )


def test_a_milvus_lite_file_in_use_gets_a_clear_error(search) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "search_service", "--milvus-uri", search.config.milvus_uri, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 1
    assert f"cannot open the Milvus Lite file {search.config.milvus_uri}" in second.stderr
    assert "Only one process at a time may open a Milvus Lite file" in second.stderr


def test_a_damaged_milvus_lite_file_is_refused_and_left_as_it_is(tiny_encoder, tmp_path) -> None:
    """Lite served a file with one page zeroed (a bad sector) without a word: searches saw part of the
    collection, and rows then reported stored were gone after a restart. A file of other bytes was refused as
    in use by another process."""
    milvus = tmp_path / "milvus.db"
    encoder = tiny_encoder.grpc.address
    with running_search(encoder, milvus) as server, search_stub(server.grpc.address) as stub:
        requests = [search_pb2.IngestRequest(image=picture(900 + n), uri=f"{n}.png") for n in range(12)]
        assert [answer.outcome for answer in stub.Ingest(iter(requests))] == [STORED] * 12
    page_zeroed = bytearray(milvus.read_bytes())
    page_zeroed[2 * 4096 : 3 * 4096] = bytes(4096)
    for content, problem in (
        (bytes(page_zeroed), "is damaged ("),
        (b"not a database " * 1000, "is damaged (file is not a database)"),
    ):
        milvus.write_bytes(content)
        with pytest.raises(ServiceError) as refused, running_search(encoder, milvus):
            pass
        assert refused.value.code == grpc.StatusCode.DATA_LOSS
        assert f"the Milvus Lite file {milvus} {problem}" in refused.value.message
        assert milvus.read_bytes() == content


@pytest.mark.parametrize("closed", ["folder", "file"])
def test_a_milvus_lite_file_or_folder_this_process_may_not_write_is_named(tmp_path, closed: str) -> None:
    """Lite's own failure was "[Errno 30] Read-only file system: '…/.milvus.db.lock'" and a traceback; and a
    file it may not read was no damaged one, whatever SQLite could not say of it."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    milvus = folder / "milvus.db"
    if closed == "folder":
        folder.chmod(0o555)
    else:
        milvus.write_bytes(b"SQLite format 3\x00" + bytes(4080))
        milvus.chmod(0)
    command = [sys.executable, "-m", "search_service", "--milvus-uri", str(milvus), "--port", "0"]
    command += ["--thumbnail-dir", str(tmp_path / "thumbnails")]  # else beside it, and refused first
    if os.geteuid() == 0:  # root writes past permission bits unless it gives up the capability to
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"cannot open the Milvus Lite file {milvus} (--milvus-uri)" in refused.stderr
    assert f"a lock file beside it, in {folder}, which this process may not" in refused.stderr


def test_a_milvus_lite_file_with_a_journal_to_roll_back_is_left_to_lite(tmp_path) -> None:
    """A writer killed mid-transaction (Lite, by the out-of-memory killer) leaves a journal that the next
    opener rolls back. The check reads the file read-only, which cannot: the file is not damaged for that."""
    milvus = tmp_path / "milvus.db"
    killed_mid_write = f"""
import os, sqlite3
database = sqlite3.connect({str(milvus)!r}, isolation_level=None)
database.execute("create table t (x)")
database.execute("insert into t values (1)")
database.execute("begin")
database.executemany("insert into t values (?)", [(bytes(1000),)] * 5000)  # more than its cache holds
os._exit(0)
"""
    subprocess.run([sys.executable, "-c", killed_mid_write], check=True, timeout=60)
    assert (tmp_path / "milvus.db-journal").stat().st_size > 0
    check_lite_file(str(milvus))
    with contextlib.closing(sqlite3.connect(milvus)) as database:  # as Lite opens it: rolled back
        assert database.execute("select count(*) from t").fetchone() == (1,)


def test_a_milvus_lite_file_in_a_folder_not_made_yet_is_taken(tmp_path) -> None:
    check_lite_file(str(tmp_path / "new" / "milvus.db"))  # Lite makes the folder


def test_the_health_monitor_survives_a_check_that_fails_unexpectedly(tiny_encoder, tmp_path, caplog) -> None:
    """A check that raised anything but a ServiceError ended the monitor's thread: health then stayed as it
    was for good (SERVING while Milvus was down, or NOT_SERVING for ever)."""
    checks: list[float] = []
    with running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db", health_interval_s=0.05) as server:
        checked = server.check_health

        def failing_once() -> bool:
            checks.append(time.monotonic())
            if len(checks) == 1:
                raise RuntimeError("a defect in one check")
            return checked()

        server.check_health = failing_once  # type: ignore[method-assign]
        for _ in range(1200):  # a bounded poll of the monitor's next checks
            if len(checks) >= 3:
                break
            threading.Event().wait(0.05)
    assert len(checks) >= 3
    assert any(r.getMessage() == "health: the check failed unexpectedly" for r in caplog.records)


def test_health_follows_the_encoder(tiny_path, tmp_path) -> None:
    port = free_port()
    with running_search(f"127.0.0.1:{port}", tmp_path / "milvus.db") as server:
        assert server.check_health() is False
        with running_encoder(tiny_path, port=port):
            assert server.check_health() is True
            with grpc.insecure_channel(server.grpc.address) as channel:
                check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert check.status == health_pb2.HealthCheckResponse.SERVING
        assert server.check_health() is False


def test_watching_a_name_no_service_has_is_not_found_while_its_own_names_are_watched(search) -> None:
    with grpc.insecure_channel(search.grpc.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ["x" * 100_000, "imagesearch.v1.Nothing"]:
            with pytest.raises(grpc.RpcError) as refused:
                next(health.Watch(health_pb2.HealthCheckRequest(service=name), timeout=10))
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        for name in ["", "imagesearch.v1.SearchService"]:
            watch = health.Watch(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()


def test_health_stays_not_serving_while_a_stopping_service_drains(tiny_encoder, tmp_path) -> None:
    """A health check that runs during the drain (the monitor's, every few seconds) finds Milvus and the
    encoder well, and must not tell load balancers to send calls to a service that is going away."""
    config = SearchConfig(
        encoder=tiny_encoder.grpc.address,
        milvus_uri=str(tmp_path / "milvus.db"),
        port=0,
        metrics_port=-1,
        health_port=0,
    )
    server, held = SearchServer(config), threading.Event()

    def a_stream_held_open() -> Iterator[search_pb2.IngestRequest]:
        yield search_pb2.IngestRequest(image=png(Image.new("RGB", (33, 35), "purple")), uri="held")
        held.wait()

    server.start()
    assert server.grpc is not None and server.grpc.health_address is not None
    stopper = threading.Thread(target=server.stop)
    try:
        with (
            search_stub(server.grpc.address) as stub,
            grpc.insecure_channel(server.grpc.health_address) as probe,
        ):
            ingest = stub.Ingest(a_stream_held_open())
            next(ingest)  # in flight: the drain waits for it
            # An encoder probe slower than its limit on a busy machine says NOT_SERVING until the next one.
            wait_for_health(server.grpc.health_address, health_pb2.HealthCheckResponse.SERVING)
            health = health_pb2_grpc.HealthStub(probe)
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            stopper.start()
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert server.check_health() is True  # what the monitor finds mid-drain
            assert (
                health.Check(health_pb2.HealthCheckRequest()).status
                == health_pb2.HealthCheckResponse.NOT_SERVING
            )
            held.set()
            list(ingest)
    finally:
        held.set()
        if stopper.ident is None:  # the test failed before the stop began
            server.stop()
        else:
            stopper.join()


texts_without_line_breaks = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), min_size=0, max_size=30
)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(texts_without_line_breaks, min_size=1, max_size=4, unique=True),
    probe=texts_without_line_breaks,
)
def test_no_parameter_value_changes_the_filter_structure(search, values, probe) -> None:
    """Whatever a value holds, `uri == {u}` matches exactly the rows whose uri is that value."""
    store = search.store
    name = "filter_property"
    collection = store.create(name, "property-test", 4)
    store.delete(name, 'id != ""', lambda batch: None)
    rows = [
        {
            "id": hashlib.sha256(v.encode()).hexdigest(),
            "vector": [1.0, 0, 0, 0],
            "uri": v,
            "model": "property-test",
            "metadata": {"tag": v},
            "ingested_at": 0,
        }
        for v in values
    ]
    store.upsert(collection.name, rows)
    for value in [*values, probe]:
        for field in ("uri", 'metadata["tag"]'):
            expression = render_filter(f"{field} == {{v}}", {"v": search_pb2.FilterValue(string_value=value)})
            matched = {row["uri"] for row in store.search(name, [1.0, 0, 0, 0], 16, 0, expression, ["uri"])}
            assert matched == ({value} & set(values)), (field, value)


def like_regex(tokens: list[str]) -> re.Pattern[str]:
    """What a `like` pattern means: `%` any characters, `_` any one, and a backslash escapes the next."""
    meaning = {"%": ".*", "_": ".", "\\%": "%", "\\_": "_", "\\\\": re.escape("\\")}
    return re.compile("".join(meaning.get(token, re.escape(token)) for token in tokens), re.DOTALL)


# Every uri of up to 4 of these characters, so that each pattern of up to 4 tokens below matches some.
LIKE_URIS = ["".join(chars) for size in range(1, 5) for chars in itertools.product("ab/\\%_", repeat=size)]


@settings(max_examples=60, deadline=None)
@given(
    tokens=st.lists(st.sampled_from(["a", "b", "/", "%", "_", "\\%", "\\_", "\\\\"]), min_size=1, max_size=4)
)
def test_a_like_pattern_is_refused_exactly_when_milvus_lite_would_match_it_wrongly(search, tokens) -> None:
    """Lite reads a pattern with no wildcard before its trailing ones as an equality or a prefix, comparing
    the text with its escapes and taking a trailing `_` for `%`: `C:\\photos\\%` matched nothing."""
    store, name = search.store, "like_property"
    collection = store.create(name, "property-test", 4)
    if store.count(name) == 0:
        store.upsert(
            collection.name,
            [
                {
                    "id": hashlib.sha256(uri.encode()).hexdigest(),
                    "vector": [1.0, 0, 0, 0],
                    "uri": uri,
                    "model": "property-test",
                    "metadata": {},
                    "ingested_at": 0,
                }
                for uri in LIKE_URIS
            ],
        )
    pattern = search_pb2.FilterValue(string_value="".join(tokens))
    meant = {uri for uri in LIKE_URIS if like_regex(tokens).fullmatch(uri)}

    def matched(expression: str) -> set[str]:
        rows = store.search(name, [1.0, 0, 0, 0], len(LIKE_URIS), 0, expression, ["uri"])
        return {row["uri"] for row in rows}

    try:
        expression = render_filter("uri like {p}", {"p": pattern})
    except ServiceError:
        assert matched(f"uri like {render_value('p', pattern)}") != meant
    else:
        assert matched(expression) == meant

"""The search service's features behind the page, over gRPC: min_score, Search of weighted parts ("more like
this" by id included) and thumbnails made at ingestion, served, and removed with their pictures."""

import hashlib
import io
import logging
import threading
from collections.abc import Iterable
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import encoder_stub, running_encoder, running_search, search_stub
from images import jpeg, png, two_tone
from PIL import Image
from pymilvus import MilvusClient, MilvusException

import search_service.store
from imagesearch.v1 import encoder_pb2, search_pb2

STORED = search_pb2.OUTCOME_STORED


def picture(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    return png(Image.fromarray(pixels))


def ingest(stub, pictures: list[tuple[str, bytes]], collection: str) -> list[search_pb2.IngestResponse]:
    return list(
        stub.Ingest(
            search_pb2.IngestRequest(collection=collection, image=image, uri=uri) for uri, image in pictures
        )
    )


def folder(count: int, first_seed: int = 0, prefix: str = "pics") -> list[tuple[str, bytes]]:
    return [(f"{prefix}/{seed}.png", picture(seed)) for seed in range(first_seed, first_seed + count)]


def part(weight: float | None = None, **kind: object) -> search_pb2.QueryPart:
    return search_pb2.QueryPart(**kind) if weight is None else search_pb2.QueryPart(**kind, weight=weight)


def searched(stub, collection: str, *parts: search_pb2.QueryPart, **options) -> list[search_pb2.Hit]:
    request = search_pb2.SearchRequest(
        parts=parts, options=search_pb2.SearchOptions(collection=collection, **options)
    )
    return list(stub.Search(request).hits)


def refused(call) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value


def test_min_score_returns_exactly_the_hits_at_or_above_it(stub, collection) -> None:
    pictures = folder(12)
    ingest(stub, pictures, collection)
    query = pictures[0][1]

    def hits(**options) -> list[search_pb2.Hit]:
        request = search_pb2.SearchImageRequest(
            image=query, options=search_pb2.SearchOptions(collection=collection, top_k=12, **options)
        )
        return list(stub.SearchImage(request).hits)

    everything = hits()
    cut = everything[4].score
    assert [h.record.id for h in hits(min_score=cut)] == [h.record.id for h in everything if h.score >= cut]
    assert len(hits(min_score=0.9999)) == 1  # only the picture itself
    assert len(hits(min_score=-1.0)) == 12  # set, but nothing is below it
    text = search_pb2.SearchTextRequest(
        text="noise", options=search_pb2.SearchOptions(collection=collection, top_k=12, min_score=1.0)
    )
    assert all(hit.score >= 1.0 for hit in stub.SearchText(text).hits)
    for bad in (1.5, float("nan")):
        error = refused(lambda bad=bad: hits(min_score=bad))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "min_score" in error.details()


def test_search_by_id_uses_the_stored_vector(stub, collection) -> None:
    pictures = folder(8, 100)
    ids = [result.id for result in ingest(stub, pictures, collection)]
    by_id = searched(stub, collection, part(id=ids[2]), top_k=8)
    by_image = stub.SearchImage(
        search_pb2.SearchImageRequest(
            image=pictures[2][1], options=search_pb2.SearchOptions(collection=collection, top_k=8)
        )
    ).hits
    assert by_id[0].record.id == ids[2] and by_id[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.record.id for h in by_id] == [h.record.id for h in by_image]
    assert [h.score for h in by_id] == pytest.approx([h.score for h in by_image], abs=1e-5)

    unknown = refused(lambda: searched(stub, collection, part(id="0" * 64)))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    assert f"parts[0].id = {'0' * 64} is not stored" in unknown.details()
    malformed = refused(lambda: searched(stub, collection, part(id="../x")))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT and "parts[0].id = '../x' is not an id" in (
        malformed.details()
    )


def test_weighted_parts_add_up_to_one_unit_vector(stub, collection, tiny_encoder) -> None:
    pictures = folder(10, 200)
    ids = [result.id for result in ingest(stub, pictures, collection)]
    with encoder_stub(tiny_encoder.grpc.address) as encoder:
        text = np.asarray(
            encoder.EncodeText(encoder_pb2.EncodeTextRequest(texts=["a red ball"])).results[0].vector.values
        )
    stored = {
        record.id: np.asarray(record.vector)
        for record in stub.Get(
            search_pb2.GetRequest(collection=collection, ids=ids, output_fields=["vector"])
        ).records
    }
    hits = searched(
        stub, collection, part(text="a red ball", weight=2.0), part(id=ids[3], weight=-0.5), top_k=10
    )
    combined = 2.0 * text - 0.5 * stored[ids[3]]
    combined /= np.linalg.norm(combined)
    expected = sorted(((float(v @ combined), i) for i, v in stored.items()), reverse=True)
    assert [hit.record.id for hit in hits] == [i for _, i in expected]
    assert [hit.score for hit in hits] == pytest.approx([score for score, _ in expected], abs=1e-4)

    alone = stub.SearchText(
        search_pb2.SearchTextRequest(
            text="a red ball", options=search_pb2.SearchOptions(collection=collection)
        )
    ).hits
    doubled = searched(stub, collection, part(text="a red ball", weight=2.0))
    assert [h.record.id for h in doubled] == [h.record.id for h in alone]
    assert [h.score for h in doubled] == pytest.approx([h.score for h in alone], abs=1e-5)
    unweighted = searched(stub, collection, part(text="a red ball"))  # weight unset: 1
    assert [h.record.id for h in unweighted] == [h.record.id for h in alone]


def test_bad_parts_are_invalid_argument_naming_the_part(stub, collection) -> None:
    ingest(stub, folder(2, 300), collection)
    image = jpeg(two_tone((200, 30, 30), (30, 30, 200)))
    cases = {
        "parts is empty": [],
        "17 parts is over the limit of 16": [part(text=f"t{i}") for i in range(17)],
        "parts[1] has no text, image or id": [part(text="a"), part(weight=1.0)],
        "parts[0].text is empty": [part(text="  ")],
        "parts[1].image is empty (0 bytes)": [part(text="a"), part(image=b"")],
        "parts[1].weight = nan is not a finite number": [part(text="a"), part(text="b", weight=float("nan"))],
        "parts[0].weight = inf is not a finite number": [part(text="a", weight=float("inf"))],
        "all 2 weights are 0": [part(text="a", weight=0.0), part(image=image, weight=0.0)],
        "the parts cancel out": [part(text="a dog"), part(text="a dog", weight=-1.0)],
        "parts[1].image: not a recognised image format": [part(image=image), part(image=b"not a picture")],
        # The encoder refuses it as texts[1] of its call, where it was sent with the query's other text.
        "parts[2].text ('&nbsp;') has no words: CLIP reads only": [
            part(image=image),
            part(text="a dog"),
            part(text="&nbsp;"),
        ],
    }
    for message, parts in cases.items():
        error = refused(lambda parts=parts: searched(stub, collection, *parts))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in error.details(), (message, error.details())
        assert error.details().startswith(message.split(" ")[0]), (
            error.details()
        )  # no other service's address
    text_alone = search_pb2.SearchTextRequest(
        text="\x00", options=search_pb2.SearchOptions(collection=collection)
    )
    error = refused(lambda: stub.SearchText(text_alone))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "text ('\\x00') has no words: CLIP reads only spaces, control characters or markup in it",
    )
    assert searched(stub, collection, part(image=image), part(text="a dog", weight=0.0))


def thumbnail(stub, collection: str, image_id: str) -> bytes:
    request = search_pb2.GetThumbnailRequest(collection=collection, id=image_id)
    return stub.GetThumbnail(request).jpeg


def test_ingest_makes_a_thumbnail_of_each_stored_picture(search, stub, collection) -> None:
    large = jpeg(two_tone((250, 200, 20), (20, 60, 200), (1200, 900)))
    tall = png(two_tone((10, 150, 10), (240, 240, 240), (90, 400)))
    transparent = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    results = ingest(
        stub, [("large.jpg", large), ("tall.png", tall), ("clear.png", png(transparent))], collection
    )
    assert {result.outcome for result in results} == {STORED}
    sizes = {}
    for result in results:
        made = Image.open(io.BytesIO(thumbnail(stub, collection, result.id)))
        assert made.format == "JPEG" and made.mode == "RGB"
        sizes[result.uri] = made.size
        if result.uri == "clear.png":
            assert made.getpixel((10, 10)) == pytest.approx((255, 255, 255), abs=2)  # transparent shown white
    assert sizes == {"large.jpg": (256, 192), "tall.png": (58, 256), "clear.png": (64, 64)}
    files = sorted(path.name for path in (search.servicer.thumbnails.folder / collection).iterdir())
    assert files == sorted(f"{result.id}.jpg" for result in results)  # no temporary file left behind


def test_thumbnails_go_when_their_pictures_are_deleted(search, stub, collection) -> None:
    cats = ingest(stub, folder(3, 400, prefix="cats"), collection)
    dogs = ingest(stub, folder(3, 410, prefix="dogs"), collection)
    stub.Delete(search_pb2.DeleteRequest(collection=collection, ids=[cats[0].id]))
    by_filter = stub.Delete(
        search_pb2.DeleteRequest(
            collection=collection,
            filter="uri like {prefix}",
            filter_params={"prefix": search_pb2.FilterValue(string_value="dogs/%")},
        )
    )
    assert by_filter.deleted == 3
    for gone in [cats[0], *dogs]:
        error = refused(lambda gone=gone: thumbnail(stub, collection, gone.id))
        assert error.code() == grpc.StatusCode.NOT_FOUND and "no thumbnail" in error.details()
    assert all(thumbnail(stub, collection, kept.id) for kept in cats[1:])
    left = sorted(path.stem for path in (search.servicer.thumbnails.folder / collection).iterdir())
    assert left == sorted(kept.id for kept in cats[1:])


def test_a_delete_that_fails_part_way_leaves_no_thumbnail_of_what_it_deleted(
    search, stub, collection, monkeypatch
) -> None:
    """The thumbnails used to go only once every batch was deleted: a later batch's failure left those of
    the earlier ones, served for pictures no longer stored, and no retry could find them again."""
    pictures = ingest(stub, folder(3, 420, prefix="gone"), collection)
    monkeypatch.setattr(search_service.store, "DELETE_BATCH", 1)
    deletes, milvus_delete = [], search.store._client.delete

    def second_fails(*args, **kwargs):  # Milvus failing the second batch
        deletes.append(args)
        if len(deletes) == 2:
            raise MilvusException(code=65535, message="injected: Milvus failed this batch")
        return milvus_delete(*args, **kwargs)

    monkeypatch.setattr(search.store._client, "delete", second_fails)
    everything = search_pb2.DeleteRequest(collection=collection, filter='id != ""')
    error = refused(lambda: stub.Delete(everything))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details().endswith("(1 matching pictures were deleted before it; delete again for the rest)")
    ids = [result.id for result in pictures]
    kept = {record.id for record in stub.Get(search_pb2.GetRequest(collection=collection, ids=ids)).records}
    [deleted] = set(ids) - kept
    assert refused(lambda: thumbnail(stub, collection, deleted)).code() == grpc.StatusCode.NOT_FOUND
    assert len(kept) == 2 and all(thumbnail(stub, collection, image_id) for image_id in kept)


def test_a_delete_between_an_ingests_rows_and_their_thumbnails_leaves_no_thumbnail_of_a_deleted_picture(
    search, stub, collection, monkeypatch
) -> None:
    """The delete is made to come right after a batch's rows are written, as a delete looped beside an
    ingest did in every round: it left the thumbnails of pictures it had deleted, served for good."""
    changes, store_new = search.servicer.changes, search.store.store_new
    delete_waits, raced, deleted, racers = threading.Event(), [], [], []
    ask_alone = changes.alone

    def alone_when_asked():  # type: ignore[no-untyped-def]
        delete_waits.set()
        return ask_alone()

    def then_delete(name: str, rows: list[dict[str, Any]]) -> set[str]:
        present = store_new(name, rows)
        monkeypatch.setattr(search.store, "store_new", store_new)  # the first batch only
        raced.extend(row["id"] for row in rows)
        request = search_pb2.DeleteRequest(collection=collection, ids=raced)
        racers.append(threading.Thread(target=lambda: deleted.append(stub.Delete(request).deleted)))
        racers[0].start()
        delete_waits.wait(timeout=60)  # the delete found the rows just written and asks for its turn
        return present

    monkeypatch.setattr(changes, "alone", alone_when_asked)
    monkeypatch.setattr(search.store, "store_new", then_delete)
    assert {result.outcome for result in ingest(stub, folder(3, 520, prefix="raced"), collection)} == {STORED}
    racers[0].join(timeout=60)
    assert (
        deleted == [len(raced)]
        and not stub.Get(search_pb2.GetRequest(collection=collection, ids=raced)).records
    )
    for image_id in raced:
        assert refused(lambda image_id=image_id: thumbnail(stub, collection, image_id)).code() == (
            grpc.StatusCode.NOT_FOUND
        )


def test_a_picture_ingested_again_between_a_deletes_rows_and_thumbnails_keeps_its_thumbnail(
    search, stub, collection, monkeypatch
) -> None:
    """Ingested again right after a delete batch removed its row and before it removed the thumbnails: the
    thumbnail just placed was removed by the delete, and the picture was stored without one."""
    [gone] = folder(1, 580, prefix="again")
    [first] = ingest(stub, [gone], collection)
    changes, thumbnails = search.servicer.changes, search.servicer.thumbnails
    remove, share, turn_asked, again, racers = thumbnails.remove, changes.shared, threading.Event(), [], []

    def shared_when_asked():  # type: ignore[no-untyped-def]
        turn_asked.set()
        return share()

    def ingest_again_then_remove(name: str, ids: Iterable[str]) -> None:
        monkeypatch.setattr(thumbnails, "remove", remove)  # the delete's batch only

        def ingest_again() -> None:
            again.extend(ingest(stub, [gone], collection))
            turn_asked.set()

        racer = threading.Thread(target=ingest_again)
        racer.start()
        assert turn_asked.wait(timeout=30)  # waiting for its turn (the delete goes first), or done
        remove(name, ids)
        racers.append(racer)

    monkeypatch.setattr(changes, "shared", shared_when_asked)
    monkeypatch.setattr(thumbnails, "remove", ingest_again_then_remove)
    assert stub.Delete(search_pb2.DeleteRequest(collection=collection, ids=[first.id])).deleted == 1
    racers[0].join(timeout=60)
    assert [result.outcome for result in again] == [STORED]
    assert stub.Get(search_pb2.GetRequest(collection=collection, ids=[first.id])).records
    assert thumbnail(stub, collection, first.id)


def test_pictures_not_stored_leave_no_thumbnail_and_nothing_part_written(
    tiny_path, tmp_path, monkeypatch, caplog
) -> None:
    """Thumbnails are made while the encoder encodes: a picture it refuses, and a batch that Milvus fails to
    write, must not keep theirs, nor log why theirs could not be made."""
    small, large = png(two_tone((200, 30, 30), (30, 30, 200), (40, 30))), picture(550)  # 1200, 2240 pixels
    with (
        running_encoder(tiny_path, max_image_pixels=2000) as encoder,
        running_search(encoder.grpc.address, tmp_path / "milvus.db") as search,
        search_stub(search.grpc.address) as stub,
        caplog.at_level(logging.WARNING, logger="search_service.thumbnails"),
    ):
        results = ingest(stub, [("small.png", small), ("large.png", large), ("junk.png", b"junk")], "")

        def fails(*_: object, **__: object) -> None:
            raise MilvusException(code=65535, message="injected: Milvus failed this write")

        monkeypatch.setattr(MilvusClient, "insert", fails)  # also in the client made again after a failure
        unwritten = [(f"{red}.png", png(two_tone((red, 30, 30), (30, 30, 200), (40, 30)))) for red in (1, 2)]
        error = refused(lambda: ingest(stub, unwritten, ""))
        assert stub.Stats(search_pb2.StatsRequest()).count == 1
        made = search.servicer.thumbnails.folder / "images"  # the default collection
    assert [result.outcome for result in results] == [STORED] + [search_pb2.OUTCOME_FAILED] * 2
    assert "over the limit of 2000 pixels" in results[1].error and caplog.messages == []
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "injected" in error.details()
    assert sorted(path.name for path in made.iterdir()) == [f"{results[0].id}.jpg"]


def test_a_picture_whose_thumbnail_cannot_be_made_is_stored_without_one(
    tiny_encoder, tmp_path, caplog
) -> None:
    image = picture(500)  # 56 x 40 = 2240 pixels, over the thumbnail limit below
    with (
        running_search(
            tiny_encoder.grpc.address, tmp_path / "milvus.db", thumbnail_max_pixels=1000
        ) as server,
        search_stub(server.grpc.address) as stub,
        caplog.at_level(logging.WARNING, logger="search_service.thumbnails"),
    ):
        [result] = ingest(stub, [("big.png", image)], "")
        assert result.outcome == STORED and result.id == hashlib.sha256(image).hexdigest()
        assert stub.Stats(search_pb2.StatsRequest()).count == 1
        error = refused(lambda: thumbnail(stub, "", result.id))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert [hit.record.id for hit in searched(stub, "", part(id=result.id))] == [result.id]
    assert "56x40 pixels is over the limit of 1000 pixels" in caplog.text


def test_ingesting_a_stored_picture_again_makes_its_missing_thumbnail(search, stub, collection) -> None:
    """After a full disk, say: the pictures were stored without thumbnails, and ingesting them again mends
    that."""
    first = ingest(stub, folder(3, 700), collection)
    made = search.servicer.thumbnails.folder / collection
    lost, kept = made / f"{first[0].id}.jpg", made / f"{first[1].id}.jpg"
    lost.unlink()
    error = refused(lambda: thumbnail(stub, collection, first[0].id))
    assert error.code() == grpc.StatusCode.NOT_FOUND and error.details().endswith(
        "(a picture stored without one, by the first version or while the thumbnail folder could not be "
        "written, gets one when ingested again)"
    )
    kept_before = kept.stat()
    again = ingest(stub, folder(3, 700), collection)
    assert [result.outcome for result in again] == [search_pb2.OUTCOME_PRESENT] * 3
    assert Image.open(io.BytesIO(thumbnail(stub, collection, first[0].id))).size == (56, 40)
    kept_after = kept.stat()
    assert (kept_after.st_ino, kept_after.st_mtime_ns) == (kept_before.st_ino, kept_before.st_mtime_ns)


def test_thumbnail_requests_are_checked(stub, collection) -> None:
    [result] = ingest(stub, folder(1, 600), collection)
    for bad in ("A" * 64, "../" + result.id, result.id[:63]):
        error = refused(lambda bad=bad: thumbnail(stub, collection, bad))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "is not an id" in error.details()
    missing = refused(lambda: thumbnail(stub, "no_such_collection", result.id))
    assert missing.code() == grpc.StatusCode.NOT_FOUND and "does not exist" in missing.details()

"""The ingestion pipeline's batching and ids, and its requests to the encoder: no gRPC, Milvus or model."""

import hashlib
import queue

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagesearch.defaults import MAX_METADATA_BYTES
from imagesearch.errors import ServiceError
from imagesearch.v1 import encoder_pb2, search_pb2
from search_service.encoder_replicas import encode_images_request
from search_service.ingest import _END, _fill_in_id, _Item, take_arrived
from search_service.store import MAX_URI_LENGTH


def item(index: int, image: bytes = b"picture", uri: str = "a.jpg", metadata: dict | None = None) -> _Item:
    return _Item(index, uri, image, metadata or {}, {}, "")


def inbox_of(*messages: object) -> "queue.Queue[object]":
    inbox: queue.Queue[object] = queue.Queue()
    for message in messages:
        inbox.put(message)
    return inbox


def test_a_batch_is_what_has_arrived_up_to_what_one_encoder_call_takes() -> None:
    first, *waiting = [item(index) for index in range(6)]
    inbox = inbox_of(*waiting)
    batch, ended = take_arrived(inbox, first, size=4)
    assert ([entry.index for entry in batch], ended) == ([0, 1, 2, 3], False)
    batch, ended = take_arrived(inbox, inbox.get(), size=4)
    assert ([entry.index for entry in batch], ended) == ([4, 5], False)  # nothing more has arrived: no wait


def test_the_end_of_the_stream_ends_the_last_batch() -> None:
    batch, ended = take_arrived(inbox_of(item(1), _END, item(9)), item(0), size=10)
    assert ([entry.index for entry in batch], ended) == ([0, 1], True)
    assert take_arrived(inbox_of(), _END, size=10) == ([], True)


def test_other_wake_ups_are_skipped() -> None:
    batch, ended = take_arrived(inbox_of(object(), item(1)), object(), size=10)
    assert ([entry.index for entry in batch], ended) == ([1], False)


def test_a_broken_stream_ends_the_call_as_cancelled() -> None:
    with pytest.raises(ServiceError) as broken:
        take_arrived(inbox_of(grpc.RpcError()), item(0), size=10)  # what gRPC's request iterator raises
    assert broken.value.code == grpc.StatusCode.CANCELLED
    assert broken.value.message == "the ingest stream broke: the caller cancelled it or went away"


def test_a_defect_in_reading_the_stream_is_raised_as_itself_not_as_a_caller_gone() -> None:
    """Every failure of the reading thread was CANCELLED 'the stream broke', and none was logged: raised as
    itself, it is what the handler's error model makes INTERNAL and logs with its traceback."""
    defect = KeyError("a defect")
    with pytest.raises(KeyError) as raised:
        take_arrived(inbox_of(defect), item(0), size=10)
    assert raised.value is defect


def test_an_item_gets_its_sha256_as_id_or_the_reason_it_cannot_be_stored() -> None:
    picture = item(0, image=b"some picture bytes")
    _fill_in_id(picture)
    assert (picture.id, picture.outcome) == (hashlib.sha256(b"some picture bytes").hexdigest(), 0)
    failures = {
        "empty image (0 bytes)": item(1, image=b""),
        f"uri is {MAX_URI_LENGTH + 1} characters, over the limit of {MAX_URI_LENGTH}": item(
            2, uri="u" * (MAX_URI_LENGTH + 1)
        ),
        f"metadata is over the limit of {MAX_METADATA_BYTES} bytes as JSON": item(
            3, metadata={"note": "x" * MAX_METADATA_BYTES}
        ),
    }
    for reason, failed in failures.items():
        _fill_in_id(failed)
        assert (failed.id, failed.outcome, failed.error) == ("", search_pb2.OUTCOME_FAILED, reason)


def test_metadata_is_measured_as_milvus_is_sent_it_compact_utf8() -> None:
    """12,000 CJK characters are 36,000 bytes of UTF-8, but 72,000 as json.dumps's \\uXXXX escapes."""
    caption = item(0, image=b"bytes", metadata={"caption": "日" * 12000})
    _fill_in_id(caption)
    assert (caption.outcome, caption.error) == (0, "")


@given(st.lists(st.binary(max_size=300), max_size=5))
def test_the_request_written_by_hand_is_the_one_protobuf_writes(images: list[bytes]) -> None:
    assert encode_images_request(images) == encoder_pb2.EncodeImagesRequest(images=images).SerializeToString()


def test_a_large_picture_gets_a_length_of_several_bytes() -> None:
    images = [bytes(range(256)) * 400, b"x" * 200_000]
    assert encode_images_request(images) == encoder_pb2.EncodeImagesRequest(images=images).SerializeToString()

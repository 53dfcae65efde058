"""Hostile input through both services: each item gets a per-item error or a correct vector, nothing crashes.

The fuzz tests run a bounded number of examples; `HYPOTHESIS_PROFILE=long make test` runs many more.
"""

import io
import os
import struct
import zlib

import clip
import grpc
import numpy as np
import pytest
from conftest import encoder_stub, running_search, search_stub
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from images import encode, jpeg, mistyped_exif_jpeg, png, png_with_size_header, two_tone
from PIL import Image

from encoder_service.images import ImageLimits, UnencodableImage, decode_image
from imagesearch.v1 import encoder_pb2, search_pb2
from search_service.thumbnails import make_thumbnail

STORED, PRESENT, FAILED = search_pb2.OUTCOME_STORED, search_pb2.OUTCOME_PRESENT, search_pb2.OUTCOME_FAILED


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def grey_png(width: int, height: int, compressed_rows: bytes) -> bytes:
    """A greyscale PNG written by hand around its compressed rows (each a filter byte, then the pixels)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", compressed_rows) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def zip_bomb_png(side: int = 10_000) -> bytes:
    """A few hundred kilobytes that decode to side x side pixels of black."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one greyscale byte per pixel
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return grey_png(side, side, pixels)


def strip_png(width: int) -> bytes:
    """A grey picture `width` pixels wide and 1 high, in little more than width / 1000 bytes."""
    return grey_png(width, 1, zlib.compress(b"\x00" + b"\x80" * width, 9))


def many_scans_jpeg(scans: int) -> bytes:
    """A progressive JPEG whose last scan comes again and again: each one makes libjpeg walk the whole
    picture once more, for a few bytes."""
    data = jpeg(two_tone((10, 120, 200), (240, 240, 240), (64, 48)), progressive=True)
    last_scan = data[data.rindex(b"\xff\xda") : -2]
    return data[:-2] + last_scan * (scans - data.count(b"\xff\xda")) + data[-2:]


def many_scans_mpo(scans: int) -> bytes:
    """The same, with a multi-picture (MPF) header, as phones write: Pillow opens it as an "MPO"."""
    first = jpeg(two_tone((10, 120, 200), (240, 240, 240), (64, 48)), progressive=True)
    buffer = io.BytesIO()
    Image.open(io.BytesIO(first)).save(
        buffer, format="MPO", save_all=True, append_images=[Image.new("RGB", (8, 8))], progressive=True
    )
    data = buffer.getvalue()
    first_end = data.index(b"\xff\xd9") + 2
    last_scan = data[data.rindex(b"\xff\xda", 0, first_end) : first_end - 2]
    repeated = last_scan * (scans - data.count(b"\xff\xda"))
    return data[: first_end - 2] + repeated + data[first_end - 2 :]


def many_frames_gif(frames: int = 300) -> bytes:
    images = [Image.new("P", (32, 32), index % 200) for index in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def huge_exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: a 60 KB EXIF block
    return jpeg(two_tone((10, 120, 200), (240, 240, 240)), exif=exif)


def corrupted(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle : middle + 64]) + data[middle + 64 :]


def hostile_images() -> dict[str, bytes]:
    picture = two_tone((200, 40, 40), (40, 40, 200), (256, 192))
    formats = {
        "jpeg": jpeg(picture),
        "png": png(picture),
        "gif": encode(picture, "GIF"),
        "webp": encode(picture, "WEBP"),
    }
    corpus = {f"truncated {name}": data[: len(data) // 2] for name, data in formats.items()}
    corpus |= {f"corrupt {name}": corrupted(data) for name, data in formats.items()}
    return corpus | {
        "zip bomb png": zip_bomb_png(),
        "30000x30000 header": png_with_size_header(30_000, 30_000),
        "zero bytes": b"",
        "random bytes": os.urandom(4096),
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10"/></svg>',
        "pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        "huge exif": huge_exif_jpeg(),
        "animated gif, 300 frames": many_frames_gif(),
        # CLIP's resize would make it 32 x 1.3 billion pixels: a worker died on it, twice.
        "40,000,000 x 1 strip": strip_png(40_000_000),
        "jpeg of 10,000 scans": many_scans_jpeg(10_000),
        "mpo of 10,000 scans": many_scans_mpo(10_000),
        "jpeg whose exif has a mistyped tag": mistyped_exif_jpeg(picture),
        "good": formats["png"],
    }


MUST_FAIL = {
    "zip bomb png",
    "jpeg of 10,000 scans",
    "mpo of 10,000 scans",
    "30000x30000 header",
    "zero bytes",
    "random bytes",
    "svg",
    "pdf",
    "truncated png",
}
MUST_ENCODE = {
    "huge exif",
    "jpeg whose exif has a mistyped tag",
    "animated gif, 300 frames",
    "40,000,000 x 1 strip",
    "good",
}


def test_hostile_images_get_a_vector_or_their_own_error_from_the_encoder(tiny_encoder) -> None:
    corpus = hostile_images()
    with encoder_stub(tiny_encoder.grpc.address) as stub:
        response = stub.EncodeImages(encoder_pb2.EncodeImagesRequest(images=list(corpus.values())))
        still_up = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest())
    outcomes = dict(zip(corpus, response.results, strict=True))
    for name, result in outcomes.items():
        if result.WhichOneof("outcome") == "vector":
            assert np.linalg.norm(result.vector.values) == pytest.approx(1.0, abs=1e-4), name
        else:
            assert result.error.startswith("images["), name
    assert {n for n, r in outcomes.items() if r.WhichOneof("outcome") == "error"} >= MUST_FAIL
    assert {n for n, r in outcomes.items() if r.WhichOneof("outcome") == "vector"} >= MUST_ENCODE
    assert still_up.image_resolution == 32


def test_a_jpeg_of_too_many_scans_is_refused_from_its_bytes_before_decoding() -> None:
    """A multi-picture JPEG (MPO) got past the limit: 183 KB of one held a decoding process for 31 s."""
    for many_scans in (many_scans_jpeg, many_scans_mpo):
        with pytest.raises(UnencodableImage, match="a JPEG of 10000 scans is over the limit of 100 scans"):
            decode_image(many_scans(10_000), ImageLimits(max_bytes=1 << 24, max_pixels=1 << 24), 64)
        assert decode_image(many_scans(20), ImageLimits(max_bytes=1 << 24, max_pixels=1 << 24), 64)


def test_a_picture_whose_exif_has_a_mistyped_tag_is_turned_upright_not_refused() -> None:
    """It was refused: "cannot decode JPEG data: required argument is not an integer"."""
    picture = two_tone((200, 40, 40), (40, 40, 200), (96, 64))
    limits = ImageLimits(max_bytes=1 << 24, max_pixels=1 << 24)
    upright = decode_image(mistyped_exif_jpeg(picture), limits, 64)
    assert upright.size == (96, 64)
    assert np.abs(np.asarray(upright, dtype=int) - np.asarray(picture, dtype=int)).mean() < 8
    thumbnail = Image.open(io.BytesIO(make_thumbnail(mistyped_exif_jpeg(picture), 1 << 24)))
    assert thumbnail.size == (96, 64)


def test_hostile_images_fail_alone_in_an_ingest(tiny_encoder, tmp_path) -> None:
    corpus = hostile_images()
    with (
        running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db") as search,
        search_stub(search.grpc.address) as stub,
    ):
        results = list(
            stub.Ingest(search_pb2.IngestRequest(image=data, uri=name) for name, data in corpus.items())
        )
        count = stub.Stats(search_pb2.StatsRequest()).count
    by_name = {result.uri: result for result in results}
    assert all(by_name[name].outcome == FAILED and by_name[name].error for name in MUST_FAIL)
    assert all(by_name[name].outcome == STORED for name in MUST_ENCODE)
    assert count == sum(result.outcome == STORED for result in results)


HOSTILE_TEXTS = {
    "100 KB": "a white dog " * 8_500,
    "control characters": "a\x00 white\x07 dog\x1b[31m",
    "emoji": "🐶🐕‍🦺 a white dog 🐩",
    "right to left": "כלב לבן a white dog كلب أبيض",
    "only punctuation": "?!…",
}


def test_hostile_texts_get_vectors_from_both_services(tiny_encoder, tmp_path) -> None:
    with encoder_stub(tiny_encoder.grpc.address) as stub:
        response = stub.EncodeText(encoder_pb2.EncodeTextRequest(texts=list(HOSTILE_TEXTS.values())))
    vectors = np.array([result.vector.values for result in response.results])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert response.results[0].truncated
    one_picture = search_pb2.IngestRequest(image=png(two_tone((1, 2, 3), (9, 9, 9))), uri="a")
    with (
        running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db") as search,
        search_stub(search.grpc.address) as stub,
    ):
        list(stub.Ingest(iter([one_picture])))
        for text in HOSTILE_TEXTS.values():
            assert len(stub.SearchText(search_pb2.SearchTextRequest(text=text)).hits) == 1


def refusal_of_raw(address: str, method: str, *messages: bytes) -> grpc.RpcError:
    """What a service answers to request messages sent as raw bytes (one: a unary call; more: a stream)."""
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
        if len(messages) == 1:
            channel.unary_unary(method)(messages[0], timeout=20)
        else:
            list(channel.stream_stream(method)(iter(messages), timeout=20))
    return refused.value


# Field 1 (texts, text or uri: each is a string), length 3: a lone surrogate's bytes, which no Python client
# would send.
NOT_UTF8 = b"\x0a\x03\xed\xa0\x80"


def test_a_request_that_cannot_be_read_is_invalid_argument_and_the_services_stay_up(
    tiny_encoder, tmp_path
) -> None:
    refused = refusal_of_raw(tiny_encoder.grpc.address, "/imagesearch.v1.EncoderService/EncodeText", NOT_UTF8)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "imagesearch.v1.EncodeTextRequest" in refused.details()
    with encoder_stub(tiny_encoder.grpc.address) as stub:
        assert len(stub.EncodeText(encoder_pb2.EncodeTextRequest(texts=["a dog"])).results) == 1
    picture = search_pb2.IngestRequest(image=png(two_tone((1, 2, 3), (9, 9, 9))), uri="a")
    with running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db") as search:
        address = search.grpc.address
        refused = refusal_of_raw(address, "/imagesearch.v1.SearchService/SearchText", NOT_UTF8)
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "imagesearch.v1.SearchTextRequest" in refused.details()
        stream = [picture.SerializeToString(), NOT_UTF8]
        refused = refusal_of_raw(address, "/imagesearch.v1.SearchService/Ingest", *stream)
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.details().startswith("requests[1]: ")
        with search_stub(address) as stub:
            assert [result.outcome for result in stub.Ingest(iter([picture]))] in ([STORED], [PRESENT])


LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=4_000_000)
VALID = [png(two_tone((200, 0, 0), (0, 0, 200), (64, 48))), jpeg(two_tone((0, 200, 0), (9, 9, 9), (64, 48)))]


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.builds(
            lambda base, offset, junk: base[:offset] + junk + base[offset + len(junk) :],
            st.sampled_from(VALID),
            st.integers(0, 400),
            st.binary(min_size=1, max_size=64),
        ),
    )
)
def test_fuzz_decoding_gives_a_picture_or_a_rejection(data: bytes) -> None:
    try:
        picture = decode_image(data, LIMITS, smallest_side=448)
    except UnencodableImage as rejection:
        assert str(rejection)
    else:
        assert picture.mode == "RGB" and picture.width * picture.height <= LIMITS.max_pixels


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=200), min_size=1, max_size=8))
def test_fuzz_text_requests_give_vectors_or_invalid_argument(tiny_encoder, texts: list[str]) -> None:
    request = encoder_pb2.EncodeTextRequest(texts=[t.encode("utf-8", "replace").decode() for t in texts])
    with encoder_stub(tiny_encoder.grpc.address) as stub:
        try:
            response = stub.EncodeText(request)
        except grpc.RpcError as error:
            details = error.details()
            text = request.texts[int(details.removeprefix("texts[").split("]")[0])]
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert not text.strip() if details.endswith("is empty") else has_no_words(text), details
        else:
            assert len(response.results) == len(texts)
            assert not any(has_no_words(text) for text in texts)


END_OF_TEXT = clip.simple_tokenizer.SimpleTokenizer().encoder["<|endoftext|>"]


def has_no_words(text: str) -> bool:
    """CLIP's own tokens for the text are its start and its end, nothing between."""
    return int(clip.tokenize(text, truncate=True)[0, 1]) == END_OF_TEXT


def test_a_text_without_words_is_refused_naming_it_not_given_the_vector_of_nothing(tiny_encoder) -> None:
    """ "&nbsp;", NUL or a byte-order mark each got a vector, the same one: a search for nothing."""
    with encoder_stub(tiny_encoder.grpc.address) as stub, pytest.raises(grpc.RpcError) as refused:
        stub.EncodeText(encoder_pb2.EncodeTextRequest(texts=["a dog", "&nbsp;", "\x00"]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == (
        "texts[1] ('&nbsp;') has no words: CLIP reads only spaces, control characters or markup in it"
    )

"""The encoder service through real gRPC servers on loopback."""

import io
import os
import signal
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import clip
import grpc
import numpy as np
import pytest
import torch
from clip.model import build_model
from conftest import encoder_process, encoder_stub, running_encoder
from grpc_health.v1 import health_pb2, health_pb2_grpc
from images import encode, jpeg, png, png_with_size_header, solid, two_tone
from PIL import Image
from test_encoder_preprocess import without_quantisation_tables

from encoder_service import preprocess
from encoder_service.config import EncoderConfig
from encoder_service.images import ImageLimits, decode_image
from encoder_service.model import ClipModel
from encoder_service.preprocess import clip_transform
from encoder_service.server import EncoderServer
from imagesearch.pictures import NOT_A_PICTURE
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc
from synthetic.pictures import camera_photo


def vectors_of(response: encoder_pb2.EncodeTextResponse | encoder_pb2.EncodeImagesResponse) -> np.ndarray:
    return np.array([result.vector.values for result in response.results], dtype=np.float32)


def encode_images(stub: encoder_pb2_grpc.EncoderServiceStub, images: list[bytes]) -> np.ndarray:
    response = stub.EncodeImages(encoder_pb2.EncodeImagesRequest(images=images))
    assert [result.WhichOneof("outcome") for result in response.results] == ["vector"] * len(images)
    return vectors_of(response)


def health_status(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status


@pytest.fixture(scope="module")
def reference_model(vit_b32_path: Path) -> torch.nn.Module:
    """The same checkpoint through CLIP's own code: the standard the service must match."""
    return build_model(torch.load(vit_b32_path, map_location="cpu")).float().eval()


def normalised(features: torch.Tensor) -> np.ndarray:
    return (features / features.norm(dim=-1, keepdim=True)).numpy()


def test_vectors_are_unit_length_512_and_name_the_model(vit_stub, vit_encoder: EncoderServer) -> None:
    text = vit_stub.EncodeText(encoder_pb2.EncodeTextRequest(texts=["a white dog", "a cat"]))
    image = vit_stub.EncodeImages(encoder_pb2.EncodeImagesRequest(images=[png(solid((200, 10, 10)))]))
    for response in (text, image):
        vectors = vectors_of(response)
        assert vectors.shape[1] == 512
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert response.model.startswith("random-vit-b32.pt@sha256:")


def test_model_info_describes_model_and_limits(vit_stub) -> None:
    info = vit_stub.GetModelInfo(encoder_pb2.GetModelInfoRequest())
    defaults = EncoderConfig().resolved_for(torch.device("cpu"))
    assert (info.dimension, info.device, info.dtype) == (512, "cpu", "float32")
    assert (info.image_resolution, info.context_length) == (224, 77)
    assert (info.max_batch_size, info.max_queue_size) == (defaults.max_batch_size, defaults.max_queue_size)
    # On the CPU the sizes left to the device are what they have always been, and nothing is a CUDA graph.
    assert (info.max_batch_size, info.max_queue_size, info.decode_workers) == (32, 512, 4)
    assert (info.jpeg_decoding, info.image_cuda_graphs, info.text_cuda_graphs) == ("processes", 0, 0)
    assert info.text_cache_size == 0


def test_text_vectors_equal_clip_reference(vit_stub, reference_model) -> None:
    # Different lengths in one request: the service runs the batch on the longest text's tokens only.
    texts = ["dog", "a photo of a red circle on a grey background", "word " * 120]
    response = vit_stub.EncodeText(encoder_pb2.EncodeTextRequest(texts=texts))
    with torch.inference_mode():
        expected = normalised(reference_model.encode_text(clip.tokenize(texts, truncate=True)))
    cosines = (vectors_of(response) * expected).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines
    assert [result.truncated for result in response.results] == [False, False, True]


def test_image_vectors_equal_clip_reference(vit_stub, reference_model) -> None:
    pictures = [two_tone((250, 20, 20), (20, 20, 250)), solid((10, 200, 10), (320, 240))]
    preprocess = clip_transform(224)
    with torch.inference_mode():
        expected = normalised(reference_model.encode_image(torch.stack([preprocess(p) for p in pictures])))
    cosines = (encode_images(vit_stub, [png(p) for p in pictures]) * expected).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines


def test_half_precision_as_on_a_gpu_equals_clip_reference(tiny_path) -> None:
    """The fp16 layout that a GPU runs, here on the CPU; CLIP's own fp16 model (as OpenAI ships it) is the
    standard, for both towers and for texts of different lengths in one batch."""
    reference = build_model(torch.load(tiny_path, map_location="cpu")).eval()
    texts = ["dog", "a photo of a red circle on a grey background"]
    pictures = [two_tone((250, 20, 20), (20, 20, 250)), solid((10, 200, 10), (320, 240))]
    preprocess = clip_transform(reference.visual.input_resolution)
    with torch.inference_mode():
        expected_texts = normalised(reference.encode_text(clip.tokenize(texts)).float())
        expected_images = normalised(
            reference.encode_image(torch.stack([preprocess(p) for p in pictures])).float()
        )
    with running_encoder(tiny_path, precision="fp16") as server, encoder_stub(server.grpc.address) as stub:
        info = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest())
        text_vectors = vectors_of(stub.EncodeText(encoder_pb2.EncodeTextRequest(texts=texts)))
        image_vectors = encode_images(stub, [png(p) for p in pictures])
    assert info.dtype == "float16"
    assert (text_vectors * expected_texts).sum(axis=1).min() >= 0.999
    assert (image_vectors * expected_images).sum(axis=1).min() >= 0.999


def test_large_jpegs_are_decoded_at_a_reduced_scale_and_still_encode_as_clip_does(
    vit_stub, reference_model
) -> None:
    camera = camera_photo(2400, 1800)
    limits = ImageLimits(max_bytes=20 << 20, max_pixels=64_000_000)
    # libjpeg's 1/4 scale: the smallest that keeps both sides at 448 (twice ViT-B/32's 224) or more.
    assert decode_image(jpeg(camera), limits, smallest_side=448).size == (600, 450)
    assert decode_image(exif_rotated_jpeg(camera), limits, smallest_side=448).size == (600, 450)
    assert decode_image(png(camera), limits, smallest_side=448).size == (2400, 1800)  # only JPEG can
    with torch.inference_mode():
        expected = normalised(reference_model.encode_image(clip_transform(224)(camera)[None]))
    cosine = float(encode_images(vit_stub, [jpeg(camera)])[0] @ expected[0])
    assert cosine >= 0.999, cosine


def test_torchscript_archive_gives_same_vectors_as_state_dict(tiny_path, tiny_torchscript_path) -> None:
    picture = png(two_tone((250, 200, 20), (20, 20, 250)))
    vectors = []
    for checkpoint in (tiny_path, tiny_torchscript_path):
        with running_encoder(checkpoint) as server, encoder_stub(server.grpc.address) as stub:
            vectors.append(encode_images(stub, [picture])[0])
    assert float(vectors[0] @ vectors[1]) >= 0.9999


def test_a_torchscript_archive_loads_without_torch_s_deprecation_warning(tiny_torchscript_path) -> None:
    """OpenAI ships CLIP as TorchScript, which only torch.jit.load reads: its FutureWarning was a line in
    every start's log for what no one can change."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ClipModel(str(tiny_torchscript_path), device="cpu")
    assert [str(warning.message) for warning in caught if "jit" in str(warning.message)] == []


def frames_gif(colors: list[tuple[int, int, int]]) -> bytes:
    frames = [solid(color) for color in colors]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return buffer.getvalue()


def exif_rotated_jpeg(picture: Image.Image) -> bytes:
    """Stored turned by 90 degrees, with EXIF orientation 6 saying how to turn it back."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg(picture.transpose(Image.Transpose.ROTATE_90), exif=exif)


def sixteen_bit_grey_png(level: int) -> bytes:
    image = Image.fromarray(np.full((48, 64), level, dtype=np.uint16))
    assert image.mode == "I;16"
    return png(image)


def test_every_photo_library_format_is_encoded(vit_stub) -> None:
    red, blue = (220, 30, 30), (30, 30, 220)
    picture = two_tone(red, blue)
    formats = {
        "jpeg": jpeg(picture),
        "png": png(picture),
        "png rgba transparent": png(Image.new("RGBA", (64, 48), (255, 0, 0, 0))),
        "png palette": png(picture.convert("P")),
        "png 16-bit grey": sixteen_bit_grey_png(0x8080),
        "png 16-bit dark grey": sixteen_bit_grey_png(200),
        "gif two frames": frames_gif([red, blue]),
        "webp": encode(picture, "WEBP", lossless=True),
        "bmp": encode(picture, "BMP"),
        "tiff": encode(picture, "TIFF"),
        "tiff lab": encode(picture.convert("LAB"), "TIFF"),
        "tiff float grey": encode(Image.fromarray(np.full((48, 64), 128 / 255, dtype=np.float32)), "TIFF"),
        "grey jpeg": jpeg(picture.convert("L")),
        "cmyk jpeg": jpeg(picture.convert("CMYK")),
        "exif rotated jpeg": exif_rotated_jpeg(picture),
        # What the special cases above must equal, or differ from:
        "stored rotated, no exif": jpeg(picture.transpose(Image.Transpose.ROTATE_90)),
        "white": png(solid((255, 255, 255))),
        "grey 128": png(solid((128, 128, 128))),
        "black": png(solid((0, 0, 0))),
        "red": png(solid(red)),
    }
    vectors = dict(zip(formats, encode_images(vit_stub, list(formats.values())), strict=True))
    same = {
        "png rgba transparent": "white",  # transparency is shown as white, not as the hidden red
        "png 16-bit grey": "grey 128",  # 0x8080 of 65535 is 128 of 255, not clipped to white
        "png 16-bit dark grey": "black",  # 200 of 65535 is 0 of 255, not 200 of 255
        "gif two frames": "red",  # the first frame
        "png palette": "png",
        "webp": "png",
        "bmp": "png",
        "tiff": "png",
        "tiff lab": "png",
        "tiff float grey": "grey 128",  # floats from 0 to 1: 0.5 is mid-grey, not black
        "exif rotated jpeg": "jpeg",
    }
    for name, twin in same.items():
        assert float(vectors[name] @ vectors[twin]) > 0.99, (name, twin)
    assert float(vectors["stored rotated, no exif"] @ vectors["jpeg"]) < 0.99


def test_bad_images_fail_alone_and_say_why(tiny_path) -> None:
    good = png(solid((10, 200, 10)))
    whole_jpeg = jpeg(two_tone((200, 0, 0), (0, 0, 200), (256, 256)))
    truncated_jpeg = whole_jpeg[: len(whole_jpeg) // 2]
    images = [
        good,
        b"",
        os.urandom(2000),
        truncated_jpeg,
        png_with_size_header(30_000, 30_000),
        png(Image.effect_noise((200, 200), 64).convert("RGB")),  # over the byte limit below
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        good,
    ]
    with (
        running_encoder(tiny_path, max_image_bytes=20_000, max_image_pixels=10_000_000) as server,
        encoder_stub(server.grpc.address) as stub,
    ):
        response = stub.EncodeImages(encoder_pb2.EncodeImagesRequest(images=images))
    outcomes = [result.WhichOneof("outcome") for result in response.results]
    assert outcomes == ["vector", "error", "error", "error", "error", "error", "error", "vector"]
    errors = [result.error for result in response.results]
    # `reason` is `error` without the position, and empty beside a vector.
    reasons = [result.reason for result in response.results]
    assert reasons == [error.split(": ", 1)[-1] if error else "" for error in errors]
    assert errors[1] == "images[1]: empty (0 bytes)"
    assert errors[2].startswith("images[2]: not a recognised image format")
    assert errors[3].startswith("images[3]: cannot decode JPEG data")
    assert errors[4].startswith("images[4]: 30000x30000 pixels is over the limit of 10000000 pixels")
    assert errors[5].startswith("images[5]:") and "over the limit of 20000 bytes" in errors[5]
    assert errors[6].startswith("images[6]: not a recognised image format")
    assert response.results[0].vector.values == response.results[7].vector.values


def test_empty_text_and_oversized_requests_are_invalid_argument(vit_stub) -> None:
    with pytest.raises(grpc.RpcError) as empty_text:
        vit_stub.EncodeText(encoder_pb2.EncodeTextRequest(texts=["a dog", "  "]))
    assert empty_text.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert empty_text.value.details() == "texts[1] is empty"
    with pytest.raises(grpc.RpcError) as no_texts:
        vit_stub.EncodeText(encoder_pb2.EncodeTextRequest(texts=[]))
    assert no_texts.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    limit = EncoderConfig().max_items_per_request
    with pytest.raises(grpc.RpcError) as too_many:
        vit_stub.EncodeText(encoder_pb2.EncodeTextRequest(texts=["a"] * (limit + 1)))
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert too_many.value.details() == f"{limit + 1} texts in one call is over the limit of {limit}"


def test_text_longer_than_char_limit_is_cut_and_flagged(tiny_path) -> None:
    with running_encoder(tiny_path, max_text_chars=10) as server, encoder_stub(server.grpc.address) as stub:
        response = stub.EncodeText(
            encoder_pb2.EncodeTextRequest(texts=["a red circle", "a red circ", "a red"])
        )
    assert [result.truncated for result in response.results] == [True, False, False]
    assert response.results[0].vector.values == response.results[1].vector.values


def test_concurrent_callers_share_forward_passes(tiny_path, monkeypatch) -> None:
    """The first forward pass is held until every caller has queued, as it would be by a real model's
    length: on a busy machine the callers' arrival could otherwise spread over more passes."""
    callers = 16
    with (
        running_encoder(tiny_path, max_batch_size=64, max_batch_delay_ms=300) as server,
        encoder_stub(server.grpc.address) as stub,
    ):
        assert server.servicer.runtime is not None
        texts, forward = server.servicer.runtime.texts, server.servicer.runtime.texts._run_batch

        def held_until_every_caller_queued(batch: list) -> Sequence:
            with texts._changed:
                texts._changed.wait_for(lambda: len(texts._queue) + len(batch) >= callers, timeout=60)
            monkeypatch.setattr(texts, "_run_batch", forward)
            return forward(batch)

        monkeypatch.setattr(texts, "_run_batch", held_until_every_caller_queued)
        before = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest())
        start = threading.Barrier(callers)

        def call(index: int) -> encoder_pb2.EncodeTextResponse:
            start.wait()
            return stub.EncodeText(encoder_pb2.EncodeTextRequest(texts=[f"caller {index}"]))

        threads = [threading.Thread(target=call, args=(index,)) for index in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        after = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest())
    assert after.texts_encoded - before.texts_encoded == callers
    assert after.text_forward_passes - before.text_forward_passes <= callers // 4


def test_a_lone_call_is_not_kept_waiting_by_the_batch_delay(tiny_path) -> None:
    # A batch waits only for requests already on their way; with none, a ten-minute delay is never paid.
    with (
        running_encoder(tiny_path, max_batch_delay_ms=600_000) as server,
        encoder_stub(server.grpc.address) as stub,
    ):
        response = stub.EncodeText(encoder_pb2.EncodeTextRequest(texts=["a lone query"]), timeout=60)
        images = stub.EncodeImages(
            encoder_pb2.EncodeImagesRequest(images=[png(solid((9, 9, 9)))]), timeout=60
        )
    assert len(response.results[0].vector.values) == len(images.results[0].vector.values) == 512


# 64 texts of 64 tokens: a forward pass of ViT-B/32's text tower that takes seconds on the CPU.
LONG_TEXTS = [f"caption {index} " + "word " * 60 for index in range(64)]


def wait_until_running(stub: encoder_pb2_grpc.EncoderServiceStub, call: grpc.Future, items: int) -> None:
    while stub.GetModelInfo(encoder_pb2.GetModelInfoRequest()).text_items_running != items:
        assert not call.done()


def test_full_queue_refuses_at_once_with_resource_exhausted(vit_b32_path) -> None:
    settings = {"max_queue_size": 64, "max_batch_size": 64}
    with running_encoder(vit_b32_path, **settings) as server, encoder_stub(server.grpc.address) as stub:
        running = stub.EncodeText.future(encoder_pb2.EncodeTextRequest(texts=LONG_TEXTS))
        wait_until_running(stub, running, 64)
        queued = stub.EncodeText.future(encoder_pb2.EncodeTextRequest(texts=LONG_TEXTS))
        while stub.GetModelInfo(encoder_pb2.GetModelInfoRequest()).text_queue_depth != 64:
            assert not queued.done()
        with pytest.raises(grpc.RpcError) as refused:
            stub.EncodeText(encoder_pb2.EncodeTextRequest(texts=["one more"]))
        assert len(running.result().results) == len(queued.result().results) == 64
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details().startswith("the text queue holds 64 of 64 items; 1 more do not fit")


def test_health_is_not_serving_until_the_model_is_loaded(tiny_path) -> None:
    server = EncoderServer(EncoderConfig(model=str(tiny_path), device="cpu", port=0, metrics_port=0))
    address = server.start()
    try:
        assert health_status(address) == health_pb2.HealthCheckResponse.NOT_SERVING
        with encoder_stub(address) as stub, pytest.raises(grpc.RpcError) as loading:
            stub.EncodeText(encoder_pb2.EncodeTextRequest(texts=["a dog"]))
        assert loading.value.code() == grpc.StatusCode.UNAVAILABLE
        server.load()
        assert health_status(address) == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop()


def test_sigterm_lets_in_flight_calls_finish(vit_b32_path) -> None:
    flags = ["--max-batch-size", "64"]
    with encoder_process(vit_b32_path, *flags) as (process, address), encoder_stub(address) as stub:
        # One call in a forward pass of several seconds, a second queued behind it; SIGTERM arrives meanwhile.
        running = stub.EncodeText.future(encoder_pb2.EncodeTextRequest(texts=LONG_TEXTS))
        wait_until_running(stub, running, 64)
        queued = stub.EncodeText.future(encoder_pb2.EncodeTextRequest(texts=["a dog"]))
        while stub.GetModelInfo(encoder_pb2.GetModelInfoRequest()).text_queue_depth == 0:
            assert not queued.done()
        process.send_signal(signal.SIGTERM)
        assert len(running.result(timeout=60).results) == 64
        assert len(queued.result(timeout=60).results[0].vector.values) == 512
        assert process.wait(timeout=60) == 0


def test_repeated_queries_are_answered_from_the_cache(tiny_path) -> None:
    with running_encoder(tiny_path, text_cache_size=16) as server, encoder_stub(server.grpc.address) as stub:
        request = encoder_pb2.EncodeTextRequest(texts=["a query asked twice"])
        first = stub.EncodeText(request)
        before = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest())
        again = stub.EncodeText(request)
        after = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest())
    assert again == first
    assert after.text_forward_passes == before.text_forward_passes
    assert after.text_cache_hits == before.text_cache_hits + 1
    assert before.text_cache_size == 16


def test_concurrent_calls_decoded_the_gpu_way_each_get_their_own_vectors(tiny_path) -> None:
    """The device decodes the JPEGs of calls that arrive together in one decoding call; each call still gets
    its own pictures' vectors, in its order, also when an undecodable JPEG fails the call it shares."""
    pictures = [jpeg(camera_photo(320 + 8 * index, 240, seed=index)) for index in range(24)]
    undecodable = without_quantisation_tables(jpeg(two_tone((200, 0, 0), (0, 0, 200), (256, 256))))
    calls = [pictures[start : start + 3] for start in range(0, 24, 3)]
    calls[5] = [*calls[5], undecodable]
    with (
        running_encoder(tiny_path, jpeg_decoding="device") as server,
        encoder_stub(server.grpc.address) as stub,
    ):
        alone = {data: encode_images(stub, [data])[0] for data in pictures}
        barrier = threading.Barrier(len(calls))

        def call(images: list[bytes]) -> encoder_pb2.EncodeImagesResponse:
            barrier.wait()
            return stub.EncodeImages(encoder_pb2.EncodeImagesRequest(images=images))

        with ThreadPoolExecutor(len(calls)) as pool:
            responses = list(pool.map(call, calls))
    for images, response in zip(calls, responses, strict=True):
        outcomes = [result.WhichOneof("outcome") for result in response.results]
        good = [data for data in images if data is not undecodable]
        assert outcomes == ["vector"] * len(good) + ["error"] * (len(images) - len(good))
        # A JPEG whose shared call failed is decoded by the PIL path: within 0.999 of the device's, as tested.
        for data, result in zip(good, response.results[: len(good)], strict=True):
            assert float(np.dot(result.vector.values, alone[data])) >= 0.999


def test_a_device_that_cannot_decode_jpegs_leaves_them_all_to_the_workers(
    tiny_path, monkeypatch, caplog
) -> None:
    """nvJPEG cannot start on some GPUs and drivers: every call then failed on the device first, warned, and
    went to the worker processes, and the service said it decoded JPEGs on the device."""

    def decoder_that_cannot_start(*args: object, **kwargs: object) -> None:
        raise RuntimeError("nvjpegCreate failed")

    monkeypatch.setattr(preprocess, "decode_jpeg", decoder_that_cannot_start)
    picture = jpeg(camera_photo(320, 240))
    with (
        running_encoder(tiny_path, jpeg_decoding="device") as server,
        encoder_stub(server.grpc.address) as stub,
    ):
        started = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
        caplog.clear()
        info = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest())
        [result] = stub.EncodeImages(encoder_pb2.EncodeImagesRequest(images=[picture])).results
    assert started == [
        "JPEGs cannot be decoded on cpu (see the warning above): the worker processes decode them all"
    ]
    assert info.jpeg_decoding == "processes" and result.WhichOneof("outcome") == "vector"
    assert not [record for record in caplog.records if "JPEG(s) on cpu failed" in record.getMessage()]


def test_the_device_decoder_is_tried_within_any_limits_the_flags_set(tiny_path) -> None:
    """The start's trial JPEG (16x16) was held to --max-image-pixels: a limit below it stopped the encoder."""
    with (
        running_encoder(tiny_path, jpeg_decoding="device", max_image_pixels=100) as server,
        encoder_stub(server.grpc.address) as stub,
    ):
        assert stub.GetModelInfo(encoder_pb2.GetModelInfoRequest()).jpeg_decoding == "device"


def test_jpegs_decoded_the_gpu_way_equal_clip_reference(vit_b32_path, reference_model) -> None:
    """`--jpeg-decoding device` on the CPU runs the GPU's JPEG path (torchvision decodes, tensor operations
    resize) with libjpeg in nvJPEG's place; what that path cannot do exactly takes the PIL path."""
    camera = camera_photo(1200, 900)
    portrait = camera.transpose(Image.Transpose.ROTATE_90)
    pictures = {
        "jpeg": (jpeg(camera), camera),
        "portrait jpeg": (jpeg(portrait), portrait),
        "exif rotated jpeg": (exif_rotated_jpeg(camera), camera),
        "grey jpeg": (jpeg(camera.convert("L")), camera.convert("L").convert("RGB")),
        "cmyk jpeg": (jpeg(camera.convert("CMYK")), camera.convert("CMYK").convert("RGB")),
        "png": (png(two_tone((250, 20, 20), (20, 20, 250))), two_tone((250, 20, 20), (20, 20, 250))),
    }
    whole = jpeg(two_tone((200, 0, 0), (0, 0, 200), (256, 256)))
    # Truncated (the PIL path's, by routing); and whole but undecodable, which fails the device's decoding
    # call: the good JPEGs of that call are then decoded by the PIL path, and this one fails alone.
    bad = [whole[: len(whole) // 2], without_quantisation_tables(whole)]
    with (
        running_encoder(vit_b32_path, jpeg_decoding="device") as server,
        encoder_stub(server.grpc.address) as stub,
    ):
        info = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest())
        response = stub.EncodeImages(
            encoder_pb2.EncodeImagesRequest(images=[data for data, _ in pictures.values()] + bad)
        )
    assert info.jpeg_decoding == "device"
    outcomes = [result.WhichOneof("outcome") for result in response.results]
    assert outcomes == ["vector"] * len(pictures) + ["error", "error"]
    assert response.results[-2].reason.startswith("cannot decode JPEG data")
    assert response.results[-1].error.startswith(f"images[{len(pictures) + 1}]: cannot decode JPEG data")
    preprocess = clip_transform(224)
    with torch.inference_mode():
        inputs = torch.stack([preprocess(picture) for _, picture in pictures.values()])
        expected = normalised(reference_model.encode_image(inputs))
    vectors = np.array([result.vector.values for result in response.results[: len(pictures)]])
    cosines = (vectors * expected).sum(axis=1)
    assert cosines.min() >= 0.999, dict(zip(pictures, cosines.round(5), strict=True))


def test_only_the_formats_it_names_are_decoded_though_pillow_reads_more(tiny_encoder) -> None:
    """Pillow's rarer decoders (PSD and FITS, say) have had the most security flaws: none of them is asked."""
    pictures = [
        encode(two_tone((200, 30, 30), (20, 20, 220)), kind) for kind in ("ICO", "PPM", "TGA", "AVIF")
    ]
    with encoder_stub(tiny_encoder.grpc.address) as stub:
        response = stub.EncodeImages(encoder_pb2.EncodeImagesRequest(images=pictures))
    assert [result.reason for result in response.results] == [NOT_A_PICTURE] * 3 + [""]
    assert response.results[3].WhichOneof("outcome") == "vector"

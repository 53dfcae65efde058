"""CLIP's preprocessing done our two ways, against CLIP's own, and the forward passes that CUDA graphs replay.

PIL resizes and crops in the worker processes: pixel for pixel CLIP's. JPEGs the GPU decodes get the same
steps as tensor operations; here they run on the CPU, with torchvision's libjpeg in nvJPEG's place, and must
stay within cosine 0.999 of CLIP's own preprocessing of the same picture.
"""

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from clip.model import build_model
from images import encode, jpeg, png
from PIL import Image, ImageOps

from encoder_service.graphs import GraphedForward, batch_buckets
from encoder_service.images import DeviceJpeg, ImageLimits, UnencodableImage, clip_pixels, jpeg_for_device
from encoder_service.model import ClipModel
from encoder_service.preprocess import (
    _FAILED_CALLS_PER_BATCH,
    ModelInput,
    clip_transform,
    decode_on_device,
    oriented,
)
from encoder_service.tokens import tokenize
from synthetic.pictures import camera_photo

CPU = torch.device("cpu")
LIMITS = ImageLimits(max_bytes=1 << 26, max_pixels=64_000_000)
SIZES = [(64, 48), (48, 64), (224, 224), (225, 224), (500, 375), (375, 500), (1000, 250), (30, 20)]


@pytest.fixture(scope="module")
def reference(vit_b32_path: Path) -> torch.nn.Module:
    return build_model(torch.load(vit_b32_path, map_location="cpu")).float().eval()


def clips_vectors(reference: torch.nn.Module, pictures: list[Image.Image]) -> np.ndarray:
    """CLIP's own preprocessing and image tower."""
    with torch.inference_mode():
        features = reference.encode_image(torch.stack([clip_transform(224)(picture) for picture in pictures]))
    return (features / features.norm(dim=-1, keepdim=True)).numpy()


def our_vectors(reference: torch.nn.Module, pixels: list[torch.Tensor]) -> np.ndarray:
    """CLIP's image tower on our (224, 224, 3) uint8 pixels."""
    with torch.inference_mode():
        features = reference.encode_image(ModelInput(224, CPU, torch.float32)(torch.stack(pixels)))
    return (features / features.norm(dim=-1, keepdim=True)).numpy()


@pytest.mark.parametrize("size", SIZES)
def test_pil_resize_and_crop_then_model_input_are_clips_own_bit_for_bit(size: tuple[int, int]) -> None:
    picture = camera_photo(*size)
    resize_crop_rgb = clip_transform(224).transforms[:3]
    expected = np.asarray(resize_crop_rgb[2](resize_crop_rgb[1](resize_crop_rgb[0](picture))))
    pixels = clip_pixels(picture, 224)
    assert np.array_equal(pixels, expected)
    model_input = ModelInput(224, CPU, torch.float32)(torch.from_numpy(pixels)[None])
    assert torch.equal(model_input[0], clip_transform(224)(picture))


def test_a_strip_has_only_its_crop_resized_within_cosine_09999_of_clip(reference) -> None:
    """Over 16 times longer than wide, a picture is cropped before its resize (a 60000x1 one would become
    224 x 13 million pixels): the same filter over the same pixels, but not bit for bit."""
    strips = [camera_photo(*size) for size in ((2000, 100), (100, 2000), (5000, 7), (300, 5000))]
    ours = our_vectors(reference, [torch.from_numpy(clip_pixels(strip, 224)) for strip in strips])
    assert (ours * clips_vectors(reference, strips)).sum(axis=1).min() >= 0.9999


def gpu_path(jpegs: list[bytes]) -> list[torch.Tensor]:
    """What the GPU does with JPEGs, on the CPU; every one of these must decode."""
    pixels = decode_on_device([DeviceJpeg(data, exif_orientation(data), 1) for data in jpegs], CPU, 224)
    assert all(picture is not None for picture in pixels)
    return pixels  # type: ignore[return-value]


def exif_orientation(data: bytes) -> int:
    return int(Image.open(io.BytesIO(data)).getexif().get(0x0112, 1))


def shown(data: bytes) -> Image.Image:
    """The picture as a viewer shows it: decoded by PIL, EXIF orientation applied."""
    return ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")


def assert_close_to_clip(reference: torch.nn.Module, jpegs: list[bytes]) -> None:
    ours = gpu_path(jpegs)
    pictures = [shown(data) for data in jpegs]
    for pixels, picture in zip(ours, pictures, strict=True):
        pil = clip_pixels(picture, 224).astype(np.int16)
        assert np.abs(pixels.numpy().astype(np.int16) - pil).mean() < 0.5  # in 8-bit levels
    cosines = (our_vectors(reference, ours) * clips_vectors(reference, pictures)).sum(axis=1)
    assert cosines.min() >= 0.999, cosines


def test_jpegs_of_every_size_the_gpu_way_are_within_cosine_0999_of_clip(reference) -> None:
    sizes = [*SIZES, (223, 301), (2400, 1800)]
    assert_close_to_clip(reference, [jpeg(camera_photo(*size, seed=seed)) for seed, size in enumerate(sizes)])


def exif_jpeg(picture: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg(picture, exif=exif)


def test_every_exif_orientation_the_gpu_way_is_within_cosine_0999_of_clip(reference) -> None:
    picture = camera_photo(400, 300)
    assert_close_to_clip(reference, [exif_jpeg(picture, orientation) for orientation in range(1, 9)])


def test_greyscale_and_cmyk_jpegs_the_gpu_way_are_within_cosine_0999_of_clip(reference) -> None:
    picture = camera_photo(400, 300)
    assert_close_to_clip(reference, [jpeg(picture.convert("L")), jpeg(picture.convert("CMYK"))])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_turning_a_tensor_by_exif_orientation_is_pils_turn(orientation: int) -> None:
    data = exif_jpeg(camera_photo(60, 40), orientation)
    stored = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy())
    turned = oriented(stored.permute(2, 0, 1), orientation).permute(1, 2, 0)
    assert torch.equal(turned, torch.from_numpy(np.asarray(shown(data)).copy()))


def test_only_jpegs_the_gpu_decodes_exactly_take_its_path() -> None:
    picture = camera_photo(320, 240)
    plain = jpeg(picture)
    assert jpeg_for_device(plain, LIMITS) == DeviceJpeg(plain, 1, 320 * 240)
    assert jpeg_for_device(exif_jpeg(picture, 6), LIMITS) == DeviceJpeg(exif_jpeg(picture, 6), 6, 320 * 240)
    pil_only = {
        "png": png(picture),
        "webp": encode(picture, "WEBP"),
        "grey jpeg": jpeg(picture.convert("L")),
        "cmyk jpeg": jpeg(picture.convert("CMYK")),
        "truncated jpeg": plain[:-100],
        "bytes after the jpeg": plain + b"trailing data",
        "jpeg of components labelled rgb": labelled_rgb(plain),
        # An Adobe segment (APP14, transform 1: YCbCr) after the start: what it says libjpeg heeds.
        "adobe-marked jpeg": plain[:2] + b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x01" + plain[2:],
    }
    assert {name: jpeg_for_device(data, LIMITS) for name, data in pil_only.items()} == dict.fromkeys(pil_only)
    # nvJPEG would read that one as YCbCr, as the JPEG it was made from; libjpeg reads it as RGB.
    read = [np.asarray(Image.open(io.BytesIO(data)), int) for data in (plain, labelled_rgb(plain))]
    assert np.abs(read[1] - read[0]).mean() > 20
    with pytest.raises(UnencodableImage, match="320x240 pixels is over the limit of 1000 pixels"):
        jpeg_for_device(plain, ImageLimits(max_bytes=1 << 20, max_pixels=1000))
    with pytest.raises(UnencodableImage, match="over the limit of 100 bytes"):
        jpeg_for_device(plain, ImageLimits(max_bytes=100, max_pixels=1 << 20))
    assert jpeg_for_device(plain, ImageLimits(max_bytes=len(plain), max_pixels=1 << 20)) is not None
    with pytest.raises(
        UnencodableImage, match=f"{len(plain)} bytes is over the limit of {len(plain) - 1} bytes"
    ):
        jpeg_for_device(plain, ImageLimits(max_bytes=len(plain) - 1, max_pixels=1 << 20))


def with_header_rewritten(data: bytes, rewrite: Callable[[bytes], bytes]) -> bytes:
    """The JPEG with each segment of its header, up to the scan's own (SOS) included, replaced by what
    `rewrite` makes of it (marker and length included)."""
    kept, position = bytearray(data[:2]), 2
    while True:
        marker = data[position : position + 2]
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        kept += rewrite(data[position : position + 2 + length])
        position += 2 + length
        if marker == b"\xff\xda":
            return bytes(kept + data[position:])


def without_quantisation_tables(data: bytes) -> bytes:
    """The JPEG with its DQT segments taken out: the header still reads, the pixels cannot be decoded."""
    return with_header_rewritten(data, lambda segment: b"" if segment.startswith(b"\xff\xdb") else segment)


def labelled_rgb(data: bytes) -> bytes:
    """A baseline JFIF JPEG's components labelled R, G, B, its JFIF marker taken out: libjpeg reads such a
    JPEG as RGB (here, YCbCr read as RGB: other colours, which shows which way it was read)."""

    def relabelled(segment: bytes) -> bytes:
        kind, changed = segment[:2], bytearray(segment)
        first, step = {b"\xff\xc0": (10, 3), b"\xff\xda": (5, 2)}.get(kind, (0, 0))
        for component, label in enumerate(b"RGB" if step else b""):
            changed[first + step * component] = label
        return b"" if kind == b"\xff\xe0" else bytes(changed)

    return with_header_rewritten(data, relabelled)


def test_a_bad_jpeg_fails_alone_in_its_decoding_call_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """nvJPEG decodes nothing of a call in which one JPEG is bad: the whole call (up to 256 pictures) went to
    the PIL path for one bad JPEG."""
    good = [jpeg(camera_photo(64, 48, seed=seed)) for seed in range(7)]
    broken = without_quantisation_tables(good[0])
    assert jpeg_for_device(broken, LIMITS) is not None  # only decoding finds the fault
    jpegs = [DeviceJpeg(data, 1, 64 * 48) for data in (*good[:2], broken, *good[2:])]
    one_per_call = decode_on_device(jpegs, CPU, 224, pixels_per_call=64 * 48)
    together = decode_on_device(jpegs, CPU, 224)
    expected = [index == 2 for index in range(8)]
    assert [pixels is None for pixels in one_per_call] == expected
    assert [pixels is None for pixels in together] == expected
    assert all(torch.equal(a, b) for a, b in zip(one_per_call, together, strict=True) if a is not None)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert [warning.split(", the")[0] for warning in warnings] == [
        "decoding 1 of 8 JPEG(s) on cpu failed (1 failed call(s))",
        "decoding 1 of 8 JPEG(s) on cpu failed (4 failed call(s))",  # 8, then 4, 2 and 1 holding it
    ]


def test_four_bad_jpegs_in_a_batch_of_256_leave_every_good_one_on_the_device() -> None:
    """The halving had a budget of failed calls that four bad JPEGs spread over a batch spent: the JPEGs
    still waiting then went to the PIL path untried, good ones too."""
    good = [jpeg(camera_photo(64, 48, seed=seed)) for seed in range(8)]
    broken = without_quantisation_tables(good[0])
    bad = {0, 64, 128, 192}
    jpegs = [DeviceJpeg(broken if index in bad else good[index % 8], 1, 64 * 48) for index in range(256)]
    decoded = decode_on_device(jpegs, CPU, 224)
    assert {index for index, pixels in enumerate(decoded) if pixels is None} == bad


def test_a_batch_of_bad_jpegs_is_given_up_after_a_bounded_number_of_failed_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Looking for the bad JPEGs in halves must not cost a call per JPEG when they are many, or when the
    decoder fails every call."""
    broken = without_quantisation_tables(jpeg(camera_photo(64, 48, seed=0)))
    jpegs = [DeviceJpeg(broken, 1, 64 * 48)] * 256
    assert decode_on_device(jpegs, CPU, 224) == [None] * 256
    [warning] = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    failed_calls = int(warning.split(" failed call")[0].rsplit("(", 1)[1])
    assert warning.startswith("decoding 256 of 256 JPEG(s) on cpu failed")
    # The budget, then at most one more a level of the halving (256 = 2 ** 8) as the halves waiting are tried.
    assert _FAILED_CALLS_PER_BATCH <= failed_calls <= _FAILED_CALLS_PER_BATCH + 8


@pytest.fixture(scope="module")
def tiny(tiny_path: Path) -> ClipModel:
    return ClipModel(str(tiny_path), "cpu")


def test_padding_that_cuda_graphs_add_changes_no_vector(tiny: ClipModel) -> None:
    """A graph runs a batch padded with zero rows, and texts padded with zero positions past their end."""
    tokens = torch.from_numpy(tiny_tokens(["a dog", "a photo of a red circle"]))
    padded_tokens = torch.zeros(4, 16, dtype=torch.long)
    padded_tokens[:2, : tokens.shape[1]] = tokens
    assert torch.allclose(tiny.text_vectors(padded_tokens)[:2], tiny.text_vectors(tokens), atol=1e-6)
    noise = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8, generator=noise)
    padded_pixels = torch.cat([pixels, torch.zeros(5, 32, 32, 3, dtype=torch.uint8)])
    assert torch.allclose(tiny.image_vectors(padded_pixels)[:3], tiny.image_vectors(pixels), atol=1e-6)


def tiny_tokens(texts: list[str]) -> np.ndarray:
    tokens = tokenize(texts, 77).tokens
    return tokens[:, : int(tokens.argmax(axis=1).max()) + 1]


def test_without_captured_graphs_every_pass_runs_eagerly(tiny: ClipModel) -> None:
    forward = GraphedForward(tiny.text_vectors)
    tokens = torch.from_numpy(tiny_tokens(["a dog"]))
    assert forward.captured_shapes == []
    assert torch.equal(forward(tokens), tiny.text_vectors(tokens))


def test_batch_buckets_cover_every_batch_up_to_the_largest() -> None:
    assert batch_buckets(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert batch_buckets(48) == [1, 2, 4, 8, 16, 32, 48]
    assert batch_buckets(1) == [1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device; CI has none")
def test_captured_graphs_replay_what_the_eager_passes_compute(tiny_path: Path) -> None:
    model = ClipModel(str(tiny_path), "cuda")
    images, texts = GraphedForward(model.image_vectors), GraphedForward(model.text_vectors)
    images.capture([(1, 32, 32, 3), (4, 32, 32, 3)], torch.uint8, model.device)
    texts.capture([(1, 8), (4, 8), (4, 16)], torch.long, model.device)
    assert sorted(images.captured_shapes) == [(1, 32, 32, 3), (4, 32, 32, 3)]
    pixels = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8, device=model.device)
    tokens = torch.from_numpy(tiny_tokens(["a dog", "a photo of a red circle"])).to(model.device)
    for forward, inputs in ((images, pixels), (texts, tokens)):
        replayed = forward(inputs).clone()
        assert torch.allclose(replayed, forward.forward(inputs), atol=2e-3)
    too_many = torch.zeros(9, 32, 32, 3, dtype=torch.uint8, device=model.device)  # no graph holds 9
    assert torch.equal(images(too_many), model.image_vectors(too_many))

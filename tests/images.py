"""Pictures the tests make in memory, in every format the encoder accepts and some it must refuse."""

import io
import struct
import zlib

from PIL import Image

Color = tuple[int, int, int]


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def solid(color: Color, size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, color)


def two_tone(left: Color, right: Color, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Not symmetric, so a rotation changes what the model sees."""
    image = Image.new("RGB", size, left)
    image.paste(right, (size[0] // 3, 0, size[0], size[1]))
    return image


def jpeg(image: Image.Image, **options: object) -> bytes:
    return encode(image, "JPEG", quality=95, **options)


def mistyped_exif_jpeg(picture: Image.Image) -> bytes:
    """Stored turned by 90 degrees, EXIF orientation 6, and one EXIF tag holding text where a number goes, as
    cameras and editors write: Pillow reads the pixels and the orientation, and fails to write that EXIF
    back."""
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Camera"
    tag_as_text = exif.tobytes().replace(b"\x01\x0f\x00\x02", b"\x01\x07\x00\x02")  # 0x0107: a SHORT
    return jpeg(picture.transpose(Image.Transpose.ROTATE_90), exif=tag_as_text)


def png(image: Image.Image) -> bytes:
    return encode(image, "PNG")


def png_with_size_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: what a decompression bomb looks like before decoding."""
    data = bytearray(png(solid((0, 0, 0), (8, 8))))
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)

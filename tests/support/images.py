"""Image bytes built in memory for tests: hostile input, and images as people have them.

Phone photos stored sideways with an EXIF orientation, HEIC, AVIF, TIFF, a 12 MP
JPEG, and a JPEG with hundreds of metadata segments. No files, no downloads.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

from PIL import Image

__all__ = [
    "MARKER",
    "encode",
    "jpeg_with_app_segments",
    "marked_upright",
    "png_claiming",
    "png_with_bad_pixels",
    "sideways_photo",
    "twelve_megapixel_jpeg",
    "upright_marker_box",
]

MARKER = (220, 20, 20)
"""The colour of the block that marks the top of `marked_upright` pictures."""
_GROUND = (20, 40, 200)
_ORIENTATION_TAG = 0x0112
_STORED_FOR = {
    # The transpose that stores an upright picture so that EXIF orientation N turns it back.
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims `width` x `height` (a decompression bomb, 0 px, a sliver)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + _chunk(b"IEND", b"")
    )


def png_with_bad_pixels(width: int = 64, height: int = 48) -> bytes:
    """A PNG whose chunks are all whole (good CRCs, IEND) but whose pixel data does not inflate."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"this is not zlib data" * 4)
        + _chunk(b"IEND", b"")
    )


def encode(image: Image.Image, format: str = "PNG", **options: object) -> bytes:
    """`image` saved in `format` (any Pillow can write, HEIF once pillow-heif is registered)."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def marked_upright(width: int = 60, height: int = 80) -> Image.Image:
    """A picture whose top quarter is a red block on blue: easy to tell upright from sideways."""
    picture = Image.new("RGB", (width, height), _GROUND)
    picture.paste(MARKER, upright_marker_box(width, height))
    return picture


def upright_marker_box(width: int, height: int) -> tuple[int, int, int, int]:
    """Where the red block of `marked_upright(width, height)` is."""
    return (0, 0, width, height // 4)


def sideways_photo(
    format: str = "JPEG", orientation: int = 6, width: int = 60, height: int = 80, **options: object
) -> bytes:
    """`marked_upright(width, height)` stored turned, with the EXIF orientation that turns it back.

    Orientation 6 is what phones write for a portrait photo: pixels stored landscape.
    """
    stored = marked_upright(width, height).transpose(_STORED_FOR[orientation])
    exif = Image.Exif()
    exif[_ORIENTATION_TAG] = orientation
    return encode(stored, format, exif=exif.tobytes(), **options)


@functools.cache
def twelve_megapixel_jpeg(quality: int = 92) -> bytes:
    """A 4032x3024 JPEG (a phone's 12 MP) with noise over gradients, so decoding costs what a photo's does."""
    size = (4032, 3024)
    noise = Image.effect_noise(size, 40)
    gradient = Image.linear_gradient("L").resize(size)
    image = Image.merge("RGB", (noise, gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    return encode(image, "JPEG", quality=quality)


def jpeg_with_app_segments(count: int = 700, segment_bytes: int = 8_000) -> bytes:
    """A small JPEG with `count` EXIF (APP1) segments before its image data."""
    base = encode(marked_upright(), "JPEG", quality=90)
    body = b"Exif\x00\x00" + b"\x00" * (segment_bytes - 6)
    segment = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    return base[:2] + segment * count + base[2:]

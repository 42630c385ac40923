"""The caps every image must pass before its pixels are decoded.

They guard against decompression bombs, slivers the model cannot see, and files
whose metadata alone would take seconds to parse.
"""

from __future__ import annotations

from llava_bridge.errors import InvalidImageError

__all__ = [
    "MAX_ASPECT_RATIO",
    "MAX_IMAGE_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_SEGMENTS",
    "MAX_PIXELS",
    "MAX_SIDE",
    "check_dimensions",
]

MAX_PIXELS = 50_000_000
"""Images with more pixels than this are refused (a 12 MP photo is 12,000,000)."""
MAX_SIDE = 20_000
"""Images with a side longer than this are refused."""
MAX_ASPECT_RATIO = 40.0
"""Images longer than this many times their width (or the reverse) are refused."""
MAX_IMAGE_BYTES = 50 * 1024 * 1024
"""Encoded images larger than this are refused."""
MAX_METADATA_SEGMENTS = 32
"""A JPEG with more metadata segments (APPn, COM) than this keeps only the ones decoding needs."""
MAX_METADATA_BYTES = 1024 * 1024
"""A JPEG whose metadata segments hold more bytes than this keeps only the ones decoding needs."""


def check_dimensions(width: int, height: int) -> None:
    """Refuse sizes with no pixels, over the pixel or side cap, or too far from square."""
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"Image is {width}x{height} px; it has no pixels.")
    if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        raise InvalidImageError(
            f"Image is {width}x{height} px, over the limit ({MAX_PIXELS:,} pixels, "
            f"{MAX_SIDE:,} px a side); resize it first."
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise InvalidImageError(
            f"Image is {width}x{height} px; sides more than {MAX_ASPECT_RATIO:g}x apart leave "
            "nothing for the model to see after its square crop. Crop it first."
        )

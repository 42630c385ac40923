"""What an image is, from its header alone: type, size, orientation. No pixel is decoded.

Making an `ImageInput` costs this probe only; the one full decode happens when the
image is prepared for the wire (or turned into a PIL image). Files cut short are
refused here when that is cheap: a JPEG with no end-of-image marker after its
scan starts, a PNG whose chunks do not run to IEND with good CRCs. Corrupt pixel
data inside a whole file is found at the decode, still before anything is sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from llava_bridge.errors import InvalidImageError
from llava_bridge.imaging.formats import (
    SUPPORTED_TYPES,
    corrupt,
    describe_non_image,
    open_image,
    sniff_mime_type,
)
from llava_bridge.imaging.jpeg_metadata import bound_jpeg_metadata
from llava_bridge.imaging.limits import MAX_IMAGE_BYTES, check_dimensions
from llava_bridge.imaging.orientation import read_orientation

__all__ = ["Probe", "probe"]

logger = logging.getLogger("llava_bridge.images")

_SAME_TYPE = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/heif": "image/heic",
    "image/heic-sequence": "image/heic",
    "image/heif-sequence": "image/heic",
}
_NO_TYPE = frozenset({"application/octet-stream", "binary/octet-stream", "image/*", ""})


@dataclass(frozen=True)
class Probe:
    """An image's header facts; `data` is the input, or a copy with pathological metadata dropped."""

    data: bytes
    mime_type: str
    width: int
    height: int
    orientation: int


def probe(data: bytes, declared: str | None = None) -> Probe:
    """Check encoded image bytes without decoding their pixels; the bytes decide the type.

    A `declared` type that disagrees with the bytes is logged at DEBUG and ignored.
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidImageError(
            f"Image is {len(data):,} bytes, over the {MAX_IMAGE_BYTES:,}-byte limit; resize or recompress it."
        )
    mime = sniff_mime_type(data)
    if mime is None:
        raise InvalidImageError(
            f"Not an image: the bytes look like {describe_non_image(data)}. Give a {SUPPORTED_TYPES} image."
        )
    _note_declared(declared, mime)
    complete = True
    if mime == "image/jpeg":
        bounded = bound_jpeg_metadata(data)
        data, complete = bounded.data, bounded.complete
    with open_image(data, mime) as image:
        width, height = image.size
        check_dimensions(width, height)
        orientation = read_orientation(image)
    if not complete:
        raise InvalidImageError(corrupt(mime, "it ends before its end-of-image marker"))
    if mime == "image/png":
        _verify_png(data)
    return Probe(data, mime, width, height, orientation)


def _verify_png(data: bytes) -> None:
    """Pillow's PNG check: every chunk's CRC, up to IEND, without inflating the pixels (cheap)."""
    with open_image(data, "image/png") as image:
        try:
            image.verify()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise InvalidImageError(corrupt("image/png", exc)) from None


def _note_declared(declared: str | None, mime: str) -> None:
    if declared is None:
        return
    label = declared.split(";", 1)[0].strip().lower()
    if label in _NO_TYPE or mime in (label, _SAME_TYPE.get(label)):
        return
    logger.debug("image declared as %s but its bytes are %s; using %s", declared, mime, mime)

"""Bounding a JPEG's metadata before Pillow parses it.

Pillow reads every APPn segment when it opens a JPEG and joins repeated EXIF
segments by concatenation, so a file with hundreds of them costs time that grows
with the square of their number (700 segments of 64 KB: about 15 s). Nothing in
Pillow caps this, so the segments before the image data are walked here, by hand,
in one linear pass over their headers: a file within `MAX_METADATA_SEGMENTS` and
`MAX_METADATA_BYTES` is left alone; one beyond them keeps only what decoding and
orientation need (the first JFIF, EXIF and Adobe segments) and drops the rest
(more EXIF, XMP, ICC, comments, maker data). A file with more segments than any
camera writes is refused.

The same walk finds where the compressed image data starts, so that a file cut
short (no end-of-image marker after it) is refused without decoding it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from llava_bridge.errors import InvalidImageError
from llava_bridge.imaging.limits import MAX_METADATA_BYTES, MAX_METADATA_SEGMENTS

__all__ = ["MAX_SEGMENTS_WALKED", "BoundedJpeg", "bound_jpeg_metadata"]

logger = logging.getLogger("llava_bridge.images")

MAX_SEGMENTS_WALKED = 10_000
"""A JPEG with more segments than this before its image data is refused outright."""

_SOS, _EOI, _COM, _TEM = 0xDA, 0xD9, 0xFE, 0x01
_KEPT_KINDS = ((0xE0, b"JFIF\x00"), (0xE1, b"Exif\x00\x00"), (0xEE, b"Adobe"))


@dataclass(frozen=True)
class BoundedJpeg:
    """A JPEG with bounded metadata, and whether its compressed data runs to an end-of-image marker."""

    data: bytes
    complete: bool


def bound_jpeg_metadata(data: bytes) -> BoundedJpeg:
    """`data` itself when its metadata is within bounds, else a copy without the excess segments.

    `complete` is False when an end-of-image marker never follows the start of the scan
    (an EXIF thumbnail's own marker comes before it and does not count).
    """
    metadata: list[tuple[int, int, int]] = []  # (start, end, marker) of APPn and COM segments
    total = 0
    walked = 0
    position, size = 2, len(data)
    while position + 4 <= size:
        if data[position] != 0xFF:
            return BoundedJpeg(data, True)  # no marker where one must be: Pillow calls the file corrupt
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (_SOS, _EOI):
            break
        if marker == _TEM or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        walked += 1
        if walked > MAX_SEGMENTS_WALKED:
            raise InvalidImageError(
                f"The JPEG has over {MAX_SEGMENTS_WALKED:,} segments before its image data, more than any "
                "camera writes; re-export it (e.g. save it again from an image editor)."
            )
        end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if end < position + 4 or end > size:
            return BoundedJpeg(data, True)
        if 0xE0 <= marker <= 0xEF or marker == _COM:
            metadata.append((position, end, marker))
            total += end - position
        position = end
    complete = data.rfind(b"\xff\xd9") > position
    if len(metadata) <= MAX_METADATA_SEGMENTS and total <= MAX_METADATA_BYTES:
        return BoundedJpeg(data, complete)
    return BoundedJpeg(_strip(data, metadata, total), complete)


def _strip(data: bytes, metadata: list[tuple[int, int, int]], total: int) -> bytes:
    kept_kinds: set[int] = set()
    pieces = []
    last = 0
    for start, end, marker in metadata:
        kind = _kind(data, start, marker)
        if kind is not None and kind not in kept_kinds:
            kept_kinds.add(kind)
            continue
        pieces.append(data[last:start])
        last = end
    pieces.append(data[last:])
    stripped = b"".join(pieces)
    logger.debug(
        "JPEG metadata over the bounds (%d segments, %d bytes): kept %d segments, %d bytes smaller",
        len(metadata),
        total,
        len(kept_kinds),
        len(data) - len(stripped),
    )
    return stripped


def _kind(data: bytes, start: int, marker: int) -> int | None:
    """Which of the kept kinds (JFIF, EXIF, Adobe) a segment is, by its marker and signature."""
    for kind, (kind_marker, signature) in enumerate(_KEPT_KINDS):
        if marker == kind_marker and data.startswith(signature, start + 4):
            return kind
    return None

"""EXIF orientation: phones store portrait photos sideways and say so in a tag.

The tag is read from the header (before any pixel is decoded) to know the upright
size; the pixels are turned by Pillow's `ImageOps.exif_transpose`, once, on the
client, so whatever a backend receives is upright and carries no orientation tag.
"""

from __future__ import annotations

from PIL import ExifTags, Image, ImageOps

__all__ = ["apply_orientation", "read_orientation", "stored_size", "upright_size"]

_SWAPS_SIDES = frozenset({5, 6, 7, 8})


def read_orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation, 1 to 8, read without decoding the pixels; 1 when absent or bad.

    PNG keeps EXIF where Pillow may only find it by decoding the whole image; there
    only what the header already holds counts.
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):  # unreadable EXIF: treat as upright
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """The size once turned upright (sides swap for the four orientations that turn by 90 degrees)."""
    return (height, width) if orientation in _SWAPS_SIDES else (width, height)


def stored_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """The size in the file's own layout, for an upright size (the inverse of `upright_size`)."""
    return upright_size(width, height, orientation)


def apply_orientation(image: Image.Image) -> None:
    """Decode `image` and turn it upright in place, dropping the orientation tag.

    Decoding errors propagate; an EXIF block too broken to read leaves the pixels as stored.
    """
    image.load()
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):
        pass

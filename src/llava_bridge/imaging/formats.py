"""Which image type some bytes are, and opening them with the one Pillow plugin for it.

The type is read from magic bytes by hand, before Pillow sees the data, for three
reasons: non-images get an error saying what they look like (a PDF, HTML); HEIC
needs the pillow-heif plugin registered first (lazily, only when HEIC bytes
arrive, so that `import llava_bridge` stays light); and `Image.open` is then
restricted to that one plugin, so no other decoder is ever tried on the bytes.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import TYPE_CHECKING

import PIL
from PIL import Image, UnidentifiedImageError, features

from llava_bridge._extras import install_hint
from llava_bridge.errors import InvalidImageError
from llava_bridge.imaging.limits import MAX_PIXELS

if TYPE_CHECKING:
    from PIL.ImageFile import ImageFile

__all__ = [
    "SUPPORTED_TYPES",
    "WIRE_TYPES",
    "corrupt",
    "describe_non_image",
    "open_image",
    "sniff_mime_type",
    "too_many_pixels",
]

logger = logging.getLogger("llava_bridge.images")

SUPPORTED_TYPES = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC or AVIF"
"""What the error for non-image bytes asks for."""
WIRE_TYPES = frozenset({"image/jpeg", "image/png"})
"""The types an image is sent as; every other type is re-encoded to one of these."""

_PLUGINS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
    "image/heic": "HEIF",
    "image/heif": "HEIF",
    "image/avif": "AVIF",
}
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1", b"mif2"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_heif_registered = False


def sniff_mime_type(data: bytes) -> str | None:
    """The image type from magic bytes: JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF or AVIF; else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data.startswith(b"BM") and len(data) > 26:
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[4:8] == b"ftyp":
        return _iso_media_type(data)
    return None


def _iso_media_type(data: bytes) -> str | None:
    """HEIC, HEIF or AVIF from an ISO media file's `ftyp` box (major and compatible brands)."""
    box_size = int.from_bytes(data[:4], "big")
    if not 16 <= box_size <= min(len(data), 4096):
        return None
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, box_size - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "image/avif"
    if brands & _HEIC_BRANDS:
        return "image/heic"
    if brands & _HEIF_BRANDS:
        return "image/heif"
    return None


def describe_non_image(data: bytes) -> str:
    """A short guess of what non-image bytes are, for error messages."""
    if not data:
        return "empty bytes"
    if data.startswith(b"%PDF"):
        return "a PDF document"
    if data[:4] == b"PK\x03\x04":
        return "a ZIP archive"
    if data.lstrip()[:1] in (b"<", b"{", b"["):
        return "text (HTML, XML or JSON)"
    try:
        data[:512].decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data"
    return "text"


def open_image(data: bytes, mime: str) -> ImageFile:
    """`Image.open` with only the plugin for `mime`; header parsed, pixels not yet decoded.

    Pillow's decompression-bomb warning is an error here. Failures are `InvalidImageError`.
    """
    plugin = _PLUGINS[mime]
    if plugin == "HEIF":
        _register_heif(mime)
    elif plugin == "AVIF":
        _require_avif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=[plugin])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImageError(too_many_pixels()) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, RuntimeError) as exc:
        raise InvalidImageError(corrupt(mime, exc)) from None


def corrupt(mime: str, exc: BaseException | str) -> str:
    """The message for bytes of a known type that do not decode."""
    return f"The {mime} image is corrupt or truncated ({exc}); re-export or re-download it."


def too_many_pixels() -> str:
    """The message for Pillow's decompression-bomb check."""
    return (
        f"Image has too many pixels (over {MAX_PIXELS:,}); it may be a decompression bomb. Resize it first."
    )


def _register_heif(mime: str) -> None:
    """Register pillow-heif's opener the first time HEIC bytes arrive; name the extra if it is missing."""
    global _heif_registered
    try:
        import pillow_heif
    except ImportError:
        raise InvalidImageError(
            f"This is a {mime.removeprefix('image/').upper()} image (the iPhone's photo format); reading it "
            f"needs the [heif] extra: {install_hint('heif')}. Or convert it to JPEG first."
        ) from None
    if not _heif_registered:
        pillow_heif.register_heif_opener()
        _heif_registered = True
        logger.debug("registered pillow-heif %s for HEIC/HEIF images", pillow_heif.__version__)


def _require_avif() -> None:
    """AVIF is read by Pillow itself (wheels of 11.3 and later); say so when this Pillow cannot."""
    if not features.check("avif"):
        raise InvalidImageError(
            f"This is an AVIF image and Pillow {PIL.__version__} here cannot read AVIF; upgrade Pillow "
            "(its wheels read AVIF from 11.3 on) or convert the image to JPEG first."
        )

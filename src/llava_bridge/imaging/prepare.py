"""Getting an image ready for the wire: one decode, turned upright, shrunk, encoded as JPEG or PNG.

The steps, for an image that must change:

1. open with the one plugin its bytes name (header only);
2. JPEG only: `Image.draft` asks the decoder itself for a 1/2, 1/4 or 1/8 scale
   image no smaller than the target (libjpeg scales in the DCT domain, so most of
   the decoding work of a 12 MP photo is never done); a target under half the
   stored size is what makes it pick a scale below 1;
3. decode once and turn upright (EXIF orientation; the tag is dropped);
4. resize to the target (Lanczos);
5. encode: PNG for images with transparency or a palette (logos, screenshots,
   GIFs), JPEG for everything else (photos, whatever their format: HEIC, AVIF,
   WebP, TIFF, BMP, or a PNG photo that was shrunk).

JPEG and PNG images that are upright, need no shrinking and fit the byte budget
go as they are; they are still decoded once (JPEG at 1/8 scale: every byte of
the compressed data is still read) so that truncated files are refused here.
Nothing is written with the pixels but an RGB colour profile the source had: no
EXIF, so no orientation tag.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image

from llava_bridge.errors import InvalidImageError
from llava_bridge.imaging.formats import WIRE_TYPES, corrupt, open_image, too_many_pixels
from llava_bridge.imaging.orientation import apply_orientation, read_orientation, stored_size
from llava_bridge.imaging.resize import ResizePolicy

__all__ = ["Encoded", "decode_upright", "encode_for_wire"]

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_PALETTE_MODES = frozenset({"P", "1"})
_PNG_COMPRESS_LEVEL = 6


@dataclass(frozen=True)
class Encoded:
    """Bytes ready to send, with their type and (upright) size."""

    data: bytes
    mime_type: str
    width: int
    height: int


def encode_for_wire(
    data: bytes,
    mime: str,
    size: tuple[int, int],
    orientation: int,
    policy: ResizePolicy | None,
) -> Encoded | None:
    """The wire form of an image whose header said `mime`, upright `size` and `orientation`.

    None when the bytes can be sent as they are. `policy` None: no shrinking, but the
    result is still upright and JPEG or PNG. Corrupt or truncated data: `InvalidImageError`.
    """
    target = policy.target_size(*size) if policy is not None else None
    as_is = mime in WIRE_TYPES and target is None and orientation == 1
    if as_is and policy is not None and len(data) > policy.max_bytes:
        as_is = False
    with _decoding(mime), open_image(data, mime) as image:
        if as_is and mime == "image/jpeg":
            image.draft(None, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()  # every byte of the compressed data is read, at 1/8 of the work
            return None
        if as_is:
            image.load()
            if read_orientation(image) == 1:  # a PNG may name its orientation only after its pixels
                return None
        elif target is not None:
            image.draft(None, stored_size(*target, orientation))
        apply_orientation(image)
        picture, format = _wire_form(image, resizing=target is not None)
        if target is not None and picture.size != target:
            picture = picture.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        icc_profile = image.info.get("icc_profile") if image.mode == picture.mode else None
        return _encode(picture, format, icc_profile, policy)


def decode_upright(data: bytes, mime: str, size_hint: tuple[int, int] | None = None) -> Image.Image:
    """The pixels, decoded once, upright, as RGB; JPEG decodes no smaller than `size_hint` when given."""
    with _decoding(mime), open_image(data, mime) as image:
        if size_hint is not None:
            image.draft(None, size_hint)
        apply_orientation(image)
        return image.convert("RGB")


def _wire_form(image: Image.Image, *, resizing: bool) -> tuple[Image.Image, str]:
    """The image in a mode its wire format holds, and that format: PNG for transparency or a palette.

    A palette is kept when the image is not resized (smaller PNGs); resizing needs full colour.
    """
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        if image.mode == "P" and not resizing:
            return image, "PNG"
        return (image if image.mode == "RGBA" else image.convert("RGBA")), "PNG"
    if image.mode in _PALETTE_MODES:
        return (image if not resizing else image.convert("L" if image.mode == "1" else "RGB")), "PNG"
    if image.mode in ("RGB", "L"):
        return image, "JPEG"
    try:
        return image.convert("RGB"), "JPEG"
    except ValueError:  # modes Pillow cannot take to RGB at once (16-bit, float)
        return image.convert("L").convert("RGB"), "JPEG"


def _encode(picture: Image.Image, format: str, icc_profile: object, policy: ResizePolicy | None) -> Encoded:
    buffer = io.BytesIO()
    options: dict[str, object] = {}
    if isinstance(icc_profile, bytes):
        options["icc_profile"] = icc_profile
    if format == "PNG":
        picture.save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL, **options)
    else:
        options["quality"] = (policy or ResizePolicy()).jpeg_quality
        picture.save(buffer, format="JPEG", **options)
    mime = "image/png" if format == "PNG" else "image/jpeg"
    return Encoded(buffer.getvalue(), mime, picture.width, picture.height)


@contextmanager
def _decoding(mime: str) -> Iterator[None]:
    """Decoder failures as `InvalidImageError`; Pillow's decompression-bomb warning as an error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImageError(too_many_pixels()) from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as exc:  # AVIF's decoder: RuntimeError
        raise InvalidImageError(corrupt(mime, exc)) from None

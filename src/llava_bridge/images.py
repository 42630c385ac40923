"""`ImageInput`: one image, from a URL, a data URI, bytes, a path or a PIL image.

An `ImageInput` never fetches a URL and never reads a file unless it was handed a
path explicitly (`ImageInput.from_path`). Bytes are checked when the value is made,
from their header only (`llava_bridge.imaging.probe`): the real type is sniffed
from magic bytes (a declared type that disagrees is logged at DEBUG and ignored),
the pixel count is capped against decompression bombs, and pathological metadata
is bounded. The pixels are decoded once, by `prepared()` (which is also where a
truncated file is refused, before anything is sent) or `to_pil()`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from PIL import Image, ImageOps

from llava_bridge.errors import InvalidImageError
from llava_bridge.imaging.formats import sniff_mime_type
from llava_bridge.imaging.limits import MAX_ASPECT_RATIO, MAX_IMAGE_BYTES, MAX_PIXELS, MAX_SIDE
from llava_bridge.imaging.orientation import read_orientation, upright_size
from llava_bridge.imaging.prepare import decode_upright, encode_for_wire
from llava_bridge.imaging.probe import probe
from llava_bridge.imaging.resize import MODEL_IMAGE_SIDE, ResizePolicy

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "MAX_ASPECT_RATIO",
    "MAX_IMAGE_BYTES",
    "MAX_PIXELS",
    "MAX_SIDE",
    "MODEL_IMAGE_SIDE",
    "ImageInput",
    "ResizePolicy",
    "sniff_mime_type",
]

_DEFAULT_POLICY = ResizePolicy()
_ALLOWED_URL_SCHEMES = ("http", "https")
_DATA_URI = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,(?P<data>.*)$",
    re.S,
)


class ImageInput:
    """An image to ask about: a URL (kept as is) or validated encoded bytes."""

    __slots__ = ("_data", "_height", "_mime_type", "_orientation", "_sha256", "_source", "_url", "_width")

    def __init__(
        self,
        *,
        url: str | None = None,
        data: bytes | None = None,
        mime_type: str | None = None,
        source: str | None = None,
    ) -> None:
        if (url is None) == (data is None):
            raise InvalidImageError("Give an image as exactly one of url= or data=.")
        self._url = url
        self._data = data
        self._mime_type = mime_type
        self._width = 0
        self._height = 0
        self._orientation = 1
        self._sha256: str | None = None
        self._source = source
        if url is not None:
            _check_url(url)
        else:
            assert data is not None
            found = probe(data, mime_type)
            self._data = found.data
            self._mime_type = found.mime_type
            self._width, self._height = found.width, found.height
            self._orientation = found.orientation
            # Hashed now, where the bytes were checked: callers make images off the event loop,
            # and backends look the hash up on it (upload cache, cache keys).
            self._sha256 = hashlib.sha256(found.data).hexdigest()

    @classmethod
    def _prepared_bytes(
        cls, data: bytes, mime_type: str, size: tuple[int, int], source: str | None
    ) -> ImageInput:
        """Bytes this module just encoded (upright JPEG or PNG): nothing to check again."""
        image = cls.__new__(cls)
        image._url = None
        image._data = data
        image._mime_type = mime_type
        image._width, image._height = size
        image._orientation = 1
        image._sha256 = None
        image._source = source
        return image

    # -- constructors -------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str) -> ImageInput:
        """An http(s) URL (passed on as is, never fetched here) or a data URI."""
        url = url.strip()
        if url[:5].lower() == "data:":
            return cls.from_data_uri(url)
        return cls(url=url, source=url)

    @classmethod
    def from_data_uri(cls, uri: str) -> ImageInput:
        """A `data:image/...;base64,...` URI; its bytes decide the type, whatever it declares."""
        declared, data = decode_data_uri(uri)
        return cls(data=data, mime_type=declared, source="data URI")

    @classmethod
    def from_bytes(cls, data: bytes, mime_type: str | None = None) -> ImageInput:
        """Encoded image bytes: JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC (the [heif] extra) or AVIF.

        `mime_type` is a hint only: the bytes decide the type.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidImageError(f"from_bytes() takes bytes, not {type(data).__name__}.")
        return cls(data=bytes(data), mime_type=mime_type, source="bytes")

    @classmethod
    def from_path(cls, path: str | PathLike[str]) -> ImageInput:
        """Read an image file. Only this constructor reads the file system."""
        file = Path(path).expanduser()
        try:
            size = file.stat().st_size
        except OSError as exc:
            raise InvalidImageError(f"Cannot read image file {str(file)!r}: {exc.strerror or exc}.") from None
        if not file.is_file():
            raise InvalidImageError(f"{str(file)!r} is not a file; give the path of an image file.")
        if size > MAX_IMAGE_BYTES:
            raise InvalidImageError(
                f"Image file {str(file)!r} is {size:,} bytes, over the {MAX_IMAGE_BYTES:,}-byte limit; "
                "resize or recompress it first."
            )
        data = file.read_bytes()
        try:
            return cls(data=data, source=str(file))
        except InvalidImageError as exc:
            raise InvalidImageError(f"{file.name}: {exc}") from None

    @classmethod
    def from_pil(cls, image: PILImage, format: Literal["PNG", "JPEG"] = "PNG") -> ImageInput:
        """A PIL image, encoded losslessly as PNG by default; turned upright if its EXIF says so."""
        if not isinstance(image, Image.Image):
            raise InvalidImageError(f"from_pil() takes a PIL image, not {type(image).__name__}.")
        if read_orientation(image) != 1:
            image = ImageOps.exif_transpose(image) or image
        buffer = io.BytesIO()
        converted = image if format == "PNG" or image.mode == "RGB" else image.convert("RGB")
        converted.save(buffer, format=format)
        return cls(data=buffer.getvalue(), source="PIL image")

    @classmethod
    def coerce(cls, value: Any, *, allow_paths: bool = False) -> ImageInput:
        """Make an ImageInput from a URL, data URI, bytes, PIL image or (if allowed) a path.

        A plain string is a URL or data URI. A string that is not is only read as
        a local path when `allow_paths` is true; a `pathlib.Path` counts as explicit.
        """
        if isinstance(value, ImageInput):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls.from_bytes(bytes(value))
        if isinstance(value, Image.Image):
            return cls.from_pil(value)
        if isinstance(value, PathLike):
            return cls.from_path(value)
        if isinstance(value, str):
            text = value.strip()
            scheme = urlsplit(text).scheme.lower() if ":" in text[:12] else ""
            if scheme in (*_ALLOWED_URL_SCHEMES, "data"):
                return cls.from_url(text)
            if scheme and len(scheme) > 1:
                _check_url(text)  # raises with the scheme named
            if allow_paths:
                return cls.from_path(text)
            raise InvalidImageError(
                f"{_short(text)!r} is not an http(s) URL or a data URI. To read a local file, "
                "pass a pathlib.Path or ImageInput.from_path(...) (tools: allow_local_paths=True)."
            )
        raise InvalidImageError(
            f"Cannot use a {type(value).__name__} as an image; pass a URL, a data URI, bytes, "
            "a pathlib.Path or a PIL image."
        )

    # -- properties ---------------------------------------------------------------

    @property
    def url(self) -> str | None:
        """The http(s) URL, when the image is one."""
        return self._url

    @property
    def data(self) -> bytes | None:
        """The encoded bytes, when the image is not a URL."""
        return self._data

    @property
    def is_url(self) -> bool:
        return self._url is not None

    @property
    def mime_type(self) -> str | None:
        """The sniffed type (`image/png`, ...); None for a URL."""
        return self._mime_type

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) in pixels as the image is seen (EXIF orientation applied); None for a URL."""
        if self._data is None:
            return None
        return upright_size(self._width, self._height, self._orientation)

    @property
    def orientation(self) -> int:
        """The EXIF orientation of the bytes (1: stored upright; 6: a phone's portrait photo)."""
        return self._orientation

    @property
    def source(self) -> str:
        """Where the image came from, for messages and metadata."""
        return self._source or (self._url or "bytes")

    @property
    def sha256(self) -> str:
        """Hex digest of the bytes (or of the URL)."""
        if self._sha256 is None:
            payload = self._data if self._data is not None else (self._url or "").encode()
            self._sha256 = hashlib.sha256(payload).hexdigest()
        return self._sha256

    # -- conversions --------------------------------------------------------------

    def to_data_uri(self) -> str:
        """`data:<mime>;base64,...`; a URL image has no data URI."""
        if self._data is None:
            raise InvalidImageError("A URL image has no data URI; it is sent by URL.")
        return f"data:{self._mime_type};base64,{base64.b64encode(self._data).decode('ascii')}"

    def to_pil(self, size_hint: tuple[int, int] | None = None) -> PILImage:
        """Decode to an upright RGB PIL image (bytes images only).

        With `size_hint`, a JPEG may decode smaller (at 1/2, 1/4 or 1/8 scale), never
        below that size: enough for a thumbnail or the model's 336 px, at a fraction of the cost.
        """
        if self._data is None or self._mime_type is None:
            raise InvalidImageError("A URL image is not fetched by ImageInput; fetch it first.")
        hint = None if size_hint is None else upright_size(*size_hint, self._orientation)
        return decode_upright(self._data, self._mime_type, hint)

    def prepared(self, policy: ResizePolicy | None = _DEFAULT_POLICY) -> ImageInput:
        """The image as it goes on the wire: JPEG or PNG, upright, shrunk by `policy`.

        One decode (JPEG draft mode when shrinking). `policy=None` shrinks nothing but
        still turns the image upright and re-encodes types other than JPEG and PNG.
        Returns `self` when the bytes can go as they are; a URL image is returned as is.
        Raises `InvalidImageError` for corrupt or truncated bytes. CPU work: async
        callers run it in a thread.
        """
        if self._data is None or self._mime_type is None:
            return self
        size = upright_size(self._width, self._height, self._orientation)
        encoded = encode_for_wire(self._data, self._mime_type, size, self._orientation, policy)
        if encoded is None:
            return self
        return ImageInput._prepared_bytes(
            encoded.data, encoded.mime_type, (encoded.width, encoded.height), self.source
        )

    def resized(self, policy: ResizePolicy | None = None) -> ImageInput:
        """`prepared(policy)`, with `ResizePolicy()` when `policy` is None."""
        return self.prepared(policy or _DEFAULT_POLICY)

    def __repr__(self) -> str:
        if self._url is not None:
            return f"ImageInput(url={_short(self._url, 80)!r})"
        size = len(self._data or b"")
        return f"ImageInput({self._mime_type}, {self._width}x{self._height}, {size:,} bytes)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageInput) and self.sha256 == other.sha256 and self.is_url == other.is_url

    def __hash__(self) -> int:
        return hash(self.sha256)


_B64_STEP = 1 << 18
"""Base64 characters decoded per step (a multiple of 4, so padding can only end the last step)."""


def decode_data_uri(uri: str) -> tuple[str | None, bytes]:
    """Split a data URI into (declared mime type, bytes)."""
    match = _DATA_URI.match(uri.strip())
    if match is None:
        raise InvalidImageError("Malformed data URI; expected 'data:image/<type>;base64,<data>'.")
    if not match.group("b64"):
        raise InvalidImageError("Data URI is not base64-encoded; use 'data:image/<type>;base64,<data>'.")
    payload = match.group("data")
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise InvalidImageError(
            f"Data URI is over the {MAX_IMAGE_BYTES:,}-byte image limit; resize the image or send a URL."
        )
    if any(space in payload for space in " \t\r\n\f\v"):  # a fast scan; re.sub holds the GIL for long
        payload = re.sub(r"\s+", "", payload)
    try:
        # In steps, so another thread (the event loop) gets the GIL between them: one
        # b64decode of a 12 MP photo's data URI holds it for ~50 ms.
        data = b"".join(
            base64.b64decode(payload[start : start + _B64_STEP], validate=True)
            for start in range(0, len(payload), _B64_STEP)
        )
    except (binascii.Error, ValueError):
        raise InvalidImageError("Data URI holds invalid base64; re-encode the image.") from None
    declared = match.group("mime")
    return (declared.lower() if declared else None), data


def _check_url(url: str) -> None:
    """Refuse schemes other than http/https (data URIs are decoded, not kept as URLs)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _ALLOWED_URL_SCHEMES:
        shown = f"scheme {scheme + ':'!r}" if scheme else "no scheme"
        raise InvalidImageError(
            f"Image URL has {shown}; only http, https and data: URLs are accepted. "
            "For a local file pass a pathlib.Path or ImageInput.from_path(...)."
        )
    if not parts.hostname:
        raise InvalidImageError(f"Image URL {_short(url)!r} has no host; give a full http(s) URL.")


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."

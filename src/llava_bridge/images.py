"""`ImageInput`: one image, from a URL, a data URI, bytes, a path or a PIL image.

An `ImageInput` never fetches a URL and never reads a file unless it was handed a
path explicitly (`ImageInput.from_path`). Bytes are checked when the value is made:
the real type is sniffed from magic bytes, Pillow decodes it fully (which catches
truncation), and the pixel count is capped against decompression bombs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from llava_bridge.errors import InvalidImageError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["ImageInput", "ResizePolicy", "sniff_mime_type"]

MAX_PIXELS = 50_000_000
"""Images with more pixels than this are refused (a 12 MP photo is 12,000,000)."""
MAX_SIDE = 20_000
"""Images with a side longer than this are refused."""
MAX_ASPECT_RATIO = 40.0
"""Images longer than this many times their width (or the reverse) are refused."""
MAX_IMAGE_BYTES = 50 * 1024 * 1024
"""Encoded images larger than this are refused."""
MODEL_IMAGE_SIDE = 336
"""The vision tower sees 336 x 336."""

_ALLOWED_URL_SCHEMES = ("http", "https")
_DATA_URI = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,(?P<data>.*)$",
    re.S,
)


def sniff_mime_type(data: bytes) -> str | None:
    """The image type from magic bytes: JPEG, PNG, WebP, GIF or BMP; else None."""
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
    return None


def _describe_non_image(data: bytes) -> str:
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


@dataclass(frozen=True)
class ResizePolicy:
    """How to shrink an image before sending it.

    The model sees 336 x 336, so sending 12 MP wastes bandwidth. Images whose short
    side is above `short_side` are downscaled so the short side equals it (keeping
    it comfortably above 336 px), the long side is capped at `max_long_side`, and
    the result is re-encoded as JPEG at `jpeg_quality`. Smaller images are sent as
    they are unless they exceed `max_bytes`.
    """

    short_side: int = 672
    max_long_side: int = 2016
    jpeg_quality: int = 90
    max_bytes: int = 2 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.short_side < MODEL_IMAGE_SIDE:
            raise ValueError(f"short_side must be at least {MODEL_IMAGE_SIDE} (the model's input size)")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be between 1 and 100")

    def target_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The size to resize to, or None when the image is small enough already."""
        scale = min(1.0, self.short_side / min(width, height), self.max_long_side / max(width, height))
        if scale >= 1.0:
            return None
        return max(1, round(width * scale)), max(1, round(height * scale))


class ImageInput:
    """An image to ask about: a URL (kept as is) or validated encoded bytes."""

    __slots__ = ("_data", "_height", "_mime_type", "_sha256", "_source", "_url", "_width")

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
        self._sha256: str | None = None
        self._source = source
        if url is not None:
            _check_url(url)
        else:
            assert data is not None
            self._mime_type, self._width, self._height = _validate_bytes(data, mime_type)

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
        """A `data:image/...;base64,...` URI; its declared type must match its bytes."""
        declared, data = decode_data_uri(uri)
        return cls(data=data, mime_type=declared, source="data URI")

    @classmethod
    def from_bytes(cls, data: bytes, mime_type: str | None = None) -> ImageInput:
        """Encoded image bytes (JPEG, PNG, WebP, GIF or BMP)."""
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
        """A PIL image, encoded losslessly as PNG by default."""
        if not isinstance(image, Image.Image):
            raise InvalidImageError(f"from_pil() takes a PIL image, not {type(image).__name__}.")
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
        """(width, height) in pixels; None for a URL."""
        return None if self._data is None else (self._width, self._height)

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

    def to_pil(self) -> PILImage:
        """Decode to an RGB PIL image (bytes images only)."""
        if self._data is None:
            raise InvalidImageError("A URL image is not fetched by ImageInput; fetch it first.")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(self._data))
            image.load()
        return image.convert("RGB")

    def resized(self, policy: ResizePolicy | None = None) -> ImageInput:
        """A copy shrunk by `policy` (default `ResizePolicy()`); self when already small."""
        policy = policy or ResizePolicy()
        if self._data is None:
            return self
        target = policy.target_size(self._width, self._height)
        if target is None and len(self._data) <= policy.max_bytes:
            return self
        image = self.to_pil()
        if target is not None:
            image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=policy.jpeg_quality, optimize=True)
        return ImageInput(data=buffer.getvalue(), mime_type="image/jpeg", source=self.source)

    def __repr__(self) -> str:
        if self._url is not None:
            return f"ImageInput(url={_short(self._url, 80)!r})"
        size = len(self._data or b"")
        return f"ImageInput({self._mime_type}, {self._width}x{self._height}, {size:,} bytes)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageInput) and self.sha256 == other.sha256 and self.is_url == other.is_url

    def __hash__(self) -> int:
        return hash(self.sha256)


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
    try:
        data = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
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


def _validate_bytes(data: bytes, declared: str | None) -> tuple[str, int, int]:
    """Check encoded image bytes; return (mime type, width, height)."""
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidImageError(
            f"Image is {len(data):,} bytes, over the {MAX_IMAGE_BYTES:,}-byte limit; resize or recompress it."
        )
    mime = sniff_mime_type(data)
    if mime is None:
        raise InvalidImageError(
            f"Not an image: the bytes look like {_describe_non_image(data)}. "
            "Give a JPEG, PNG, WebP, GIF or BMP image."
        )
    aliases = {mime, "application/octet-stream", "image/jpg" if mime == "image/jpeg" else mime}
    if declared is not None and declared not in aliases:
        raise InvalidImageError(
            f"The image is declared as {declared} but its bytes are {mime}; fix the declared type."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                _check_dimensions(width, height)
                image.load()
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImageError(
            f"Image has too many pixels (over {MAX_PIXELS:,}); it may be a decompression bomb. "
            "Resize it first."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(
            f"The {mime} image is corrupt or truncated ({exc}); re-export or re-download it."
        ) from None
    return mime, width, height


def _check_dimensions(width: int, height: int) -> None:
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


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""Response bodies: gzip/deflate decoding, incremental and capped, and JSON that cannot
blow the stack. Shared by our pools and the httpx adapter (which reads raw bytes)."""

from __future__ import annotations

import json
import zlib
from typing import Any

__all__ = [
    "ACCEPT_ENCODING",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "BadBody",
    "BodyDecoder",
    "ResponseLimitExceeded",
    "loads",
]

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""The largest (decompressed) response body accepted, far above any real answer."""
ACCEPT_ENCODING = "gzip, deflate"
"""The content codings `BodyDecoder` decodes."""


class ResponseLimitExceeded(Exception):
    """The server's answer broke a client limit (body size, SSE line length)."""


class BadBody(ValueError):
    """A body that cannot be decoded: a corrupt or cut-short compressed stream, bad JSON."""


class BodyDecoder:
    """Decodes one response body piece by piece and counts it against `limit` bytes.

    A compressed piece is inflated with `max_length`, so a gzip bomb stops at the cap
    instead of becoming a huge string."""

    __slots__ = ("_fed", "_inflate", "_left", "limit")

    def __init__(self, content_encoding: str, limit: int) -> None:
        encoding = content_encoding.strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._inflate: Any = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header
        elif encoding in ("", "identity"):
            self._inflate = None
        else:
            raise BadBody(f"the server sent an unsupported Content-Encoding {content_encoding!r}")
        self.limit = limit
        self._left = limit
        self._fed = False

    def decode(self, data: bytes) -> bytes:
        """The decoded bytes of the next piece; raises `ResponseLimitExceeded` past the cap."""
        if self._inflate is not None and data:
            self._fed = True
            try:
                data = self._inflate.decompress(data, self._left + 1)  # one byte over says "too big"
            except zlib.error as exc:
                raise BadBody(f"the compressed body is corrupt ({exc})") from None
        if len(data) > self._left:
            raise ResponseLimitExceeded(
                f"the response body is over {self.limit} bytes; the server sent more than any "
                "real answer (raise max_response_bytes= if it is expected)"
            )
        self._left -= len(data)
        return data

    def finish(self) -> None:
        """The body ended: raises `BadBody` when a compressed one was cut short."""
        inflate = self._inflate
        if inflate is not None and self._fed and not inflate.eof:
            raise BadBody("the compressed body was cut short")


def loads(data: bytes | str) -> Any:
    """JSON, or `BadBody` (a ValueError) for malformed or absurdly nested text."""
    try:
        return json.loads(data)
    except RecursionError:
        raise BadBody("the JSON is nested too deeply to parse") from None
    except ValueError as exc:
        raise BadBody(f"not valid JSON ({exc})") from None

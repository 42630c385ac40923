"""HTTP/1.1 on the wire, IO-free: request bytes out, response events in.

Just what the fal flows need, and fast: one request per connection at a time (no
pipelining), bodies framed by Content-Length, chunked encoding, or the connection's
close. The socket shells (`_h1_sync`, `_h1_async`) feed received bytes to a
`ResponseParser` and read `Head`, body bytes and `End` back out of it.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

from llava_bridge.backends._transport.failures import UnusableRequest

__all__ = [
    "End",
    "Head",
    "NeedData",
    "Origin",
    "ProtocolError",
    "ResponseParser",
    "UnusableRequest",
    "encode_request",
    "header_problem",
    "origin_and_target",
]

MAX_HEAD_BYTES = 64 * 1024
"""A status line and headers longer than this are refused (a broken or hostile server)."""
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FRAMING = ("content-length", "transfer-encoding")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


class ProtocolError(Exception):
    """The server's bytes are not a well-formed HTTP/1.1 response."""


@dataclass(frozen=True)
class Origin:
    """Where a connection goes: scheme, host and port."""

    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        """The Host header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def origin_and_target(url: str, params: Mapping[str, str] | None = None) -> tuple[Origin, str]:
    """Split `url` (plus query `params`) into its origin and the request target."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnusableRequest(
            f"invalid URL {url!r} ({exc}); check base_url= and the other *_url settings"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UnusableRequest(f"unsupported URL scheme {parts.scheme!r} (use http:// or https://)")
    if not parts.hostname:
        raise UnusableRequest(f"the URL {url!r} has no host; give a full URL such as https://queue.fal.run")
    if port == 0:
        raise UnusableRequest(f"the URL {url!r} names port 0; give the server's real port")
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    query = quote(parts.query, safe=_QUERY_SAFE)
    if params:
        query = f"{query}&{urlencode(params)}" if query else urlencode(params)
    if query:
        target = f"{target}?{query}"
    return Origin(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme]), target


def header_problem(name: str, value: str) -> str | None:
    """What makes `name: value` unfit to send (it could split the request), or None."""
    if not name or any(c in name for c in " \t\r\n:\0"):
        return f"the header name {name!r} is empty or has a space, colon or control character; fix the name"
    if any(c in value for c in "\r\n\0"):
        return f"the value of header {name!r} has a line break or NUL; remove it (check pasted keys too)"
    return None


def encode_request(
    method: str, origin: Origin, target: str, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    """The request's bytes: request line, Host, the headers, Content-Length, the body.

    A Host among `headers` replaces the origin's; Content-Length and Transfer-Encoding
    among them are dropped (the body is framed here)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {origin.authority}"]
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem is not None:
            raise UnusableRequest(problem)
        lowered = name.lower()
        if lowered == "host":
            lines[1] = f"Host: {value}"  # the caller's own Host replaces ours
        elif lowered not in _FRAMING:  # the body's framing is ours to state
            lines.append(f"{name}: {value}")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise UnusableRequest("a header has characters outside latin-1; percent-encode them") from None
    return head + body if body else head


@dataclass(frozen=True)
class Head:
    """A response's status and headers (names lower-cased; repeats joined with ", ")."""

    status_code: int
    headers: dict[str, str]


@dataclass(frozen=True)
class End:
    """The response is complete; `reusable` says whether its connection may carry another."""

    reusable: bool


class NeedData:
    """The parser needs more bytes (or the end of the connection) to go on."""


NEED_DATA = NeedData()
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class ResponseParser:
    """Turns the bytes of one response into `Head`, body `bytes` pieces and `End`.

    Feed what the socket gave with `feed` (``b""`` for the end of the connection),
    then call `next_event` until it answers `NEED_DATA`.
    """

    def __init__(self, method: str = "GET") -> None:
        self._method = method
        self._buffer = bytearray()
        self._eof = False
        self._state = _HEAD
        self._left = 0
        self._keep_alive = True
        self._decoder: zlib._Decompress | None = None
        self._compressed = False

    def feed(self, data: bytes) -> None:
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self) -> Head | bytes | End | NeedData:
        """The next thing the response says; raises ProtocolError for a malformed one."""
        if self._state == _HEAD:
            return self._head()
        while True:
            piece = self._body()
            decoder = self._decoder
            if decoder is None or isinstance(piece, NeedData):
                return piece
            if isinstance(piece, End):
                if self._compressed and not decoder.eof:
                    raise ProtocolError("the compressed body was cut short")
                return piece
            self._compressed = True
            try:
                piece = decoder.decompress(piece)
            except zlib.error as exc:
                raise ProtocolError(f"the compressed body is corrupt ({exc})") from None
            if piece:
                return piece

    def _head(self) -> Head | NeedData:
        end = self._buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 1)  # the cap, however the bytes came
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise ProtocolError("the response headers are too long")
            if self._eof:
                raise ProtocolError(
                    "the server closed the connection without a response"
                    if not self._buffer
                    else "the server closed the connection in the middle of the response headers"
                )
            return NEED_DATA
        raw = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        status_line, *header_lines = raw.split("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if (
            version not in ("HTTP/1.1", "HTTP/1.0")
            or len(code) != 3
            or not code.isdecimal()
            or rest[3:4] not in ("", " ")  # not "2000 OK"
        ):
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise ProtocolError(f"malformed header line {line[:80]!r}")
            name, value = name.lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        status = int(code)
        if 100 <= status < 200:
            return self._head()  # 100 Continue and friends: the real response follows
        connection = headers.get("connection", "").lower()
        self._keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
        self._frame_body(status, headers)
        return Head(status, headers)

    def _frame_body(self, status: int, headers: dict[str, str]) -> None:
        encoding = headers.get("content-encoding", "").lower()
        if encoding in ("gzip", "deflate"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
        elif encoding not in ("", "identity"):
            raise ProtocolError(f"unsupported Content-Encoding {encoding!r}")
        if self._method == "HEAD" or status in (204, 304):
            self._state = _DONE
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = _CHUNK_SIZE
        elif "content-length" in headers:
            length = headers["content-length"].split(",")[0].strip()
            if not length.isdecimal():
                raise ProtocolError(f"bad Content-Length {headers['content-length']!r}")
            self._left = int(length)
            self._state = _LENGTH if self._left else _DONE
        else:
            self._state, self._keep_alive = _UNTIL_CLOSE, False

    def _body(self) -> bytes | End | NeedData:
        while True:
            state = self._state
            if state in (_LENGTH, _CHUNK_DATA):
                if not self._buffer:
                    if self._eof:
                        raise ProtocolError("the server closed the connection in the middle of the body")
                    return NEED_DATA
                piece = bytes(self._buffer[: self._left])
                del self._buffer[: len(piece)]
                self._left -= len(piece)
                if not self._left:
                    self._state = _DONE if state == _LENGTH else _CHUNK_CRLF
                return piece
            if state == _UNTIL_CLOSE:
                if self._buffer:
                    piece = bytes(self._buffer)
                    self._buffer.clear()
                    return piece
                if self._eof:
                    self._state = _DONE
                    return End(False)
                return NEED_DATA
            if state == _DONE:
                return End(self._keep_alive and not self._buffer)
            line = self._line()
            if line is None:
                return NEED_DATA
            if state == _CHUNK_SIZE:
                size = line.split(b";", 1)[0].strip()
                try:
                    if size.lstrip(b"0123456789abcdefABCDEF"):  # int() takes "-1", "+5", "0x5", "1_0"
                        raise ValueError(size)
                    self._left = int(size, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size[:20]!r}") from None
                self._state = _CHUNK_DATA if self._left else _TRAILERS
            elif state == _CHUNK_CRLF:
                if line:
                    raise ProtocolError("a chunk is longer than its size says")
                self._state = _CHUNK_SIZE
            elif not line:  # _TRAILERS: an empty line ends them
                self._state = _DONE

    def _line(self) -> bytes | None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise ProtocolError("a chunk header or trailer is too long")
            if self._eof:
                raise ProtocolError("the server closed the connection in the middle of the body")
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

"""HTTP/1.1 on the wire, IO-free: request bytes out, response events in.

One `ClientConnection` per socket, reused request after request; no pipelining. The
socket shells (`sync_pool`, `async_pool`) feed it received bytes and read `Head`,
decoded body bytes and `End` back out.

Who does what: httptools (llhttp, the C parser uvicorn uses) parses responses: the
status line, headers, Content-Length and chunked framing, refusing what is malformed or
ambiguous (a four-digit status, chunk sizes such as ``-1``, ``+5``, ``0x5``, ``1_0``,
``Content-Length: 2, 40``, a repeated Content-Length, Content-Length together with
Transfer-Encoding, obs-fold). This module refuses any Transfer-Encoding but ``chunked``,
caps the head at `MAX_HEAD_BYTES`, knows that a HEAD answer has no body and says whether
the connection may be reused; `BodyDecoder` inflates gzip/deflate and caps the body.
Requests are written here from headers `request_headers` has checked. Errors are h11's
`RemoteProtocolError` (`ProtocolError`), the type the pools and `failures` classify.

Why not h11 (it parsed here before): per status GET on a warm loopback connection
(bench/http_exchange.py, same machine, same minute) our client CPU was 0.122-0.135 ms
sync and 0.152-0.159 ms async with h11, 0.060-0.062 ms and 0.081-0.082 ms with
httptools; FalBackend's client CPU per request at concurrency 64 (bench/fal_overhead.py)
went from 0.84-0.91 ms to 0.50-0.65 ms (goal 0.6 ms).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

import h11
import httptools

from llava_bridge.backends._transport.bodies import DEFAULT_MAX_RESPONSE_BYTES, BodyDecoder
from llava_bridge.backends._transport.failures import UnusableRequest

__all__ = [
    "NEED_DATA",
    "ClientConnection",
    "End",
    "Head",
    "NeedData",
    "Origin",
    "ProtocolError",
    "UnusableRequest",
    "header_problem",
    "origin_and_target",
    "request_headers",
]

MAX_HEAD_BYTES = 64 * 1024
"""A status line and headers longer than this are refused (a broken or hostile server)."""
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FRAMING = ("content-length", "transfer-encoding")
_BODY_METHODS = ("POST", "PUT", "PATCH")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(r"[\x21-\x7e]+")

ProtocolError = h11.RemoteProtocolError
"""What a malformed or cut-short response raises."""


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


def request_headers(
    method: str, origin: Origin, headers: Mapping[str, str], body: bytes | None
) -> list[tuple[bytes, bytes]]:
    """The headers to send: Host, the caller's, Content-Length.

    A Host among `headers` replaces the origin's; Content-Length and Transfer-Encoding
    among them are dropped (the body is framed here). Raises `UnusableRequest`."""
    lines: list[tuple[str, str]] = [("Host", origin.authority)]
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem is not None:
            raise UnusableRequest(problem)
        lowered = name.lower()
        if lowered == "host":
            lines[0] = ("Host", value)  # the caller's own Host replaces ours
        elif lowered not in _FRAMING:  # the body's framing is ours to state
            lines.append((name, value))
    if body is not None or method in _BODY_METHODS:
        lines.append(("Content-Length", str(len(body or b""))))
    try:
        return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in lines]
    except UnicodeEncodeError:
        raise UnusableRequest("a header has characters outside latin-1; percent-encode them") from None


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


class _Stop(Exception):
    """Raised from a parser callback to stop llhttp: a HEAD answer ends at its head, and
    a second response after the first is not this request's."""


class ClientConnection:
    """One HTTP/1.1 connection's protocol state, request after request (no pipelining).

    `start` gives a request's bytes; then `feed` what the socket gave (``b""`` for its
    end) and call `next_event` until it answers `NEED_DATA`. `ProtocolError`, `BadBody`
    and `ResponseLimitExceeded` say the response is unusable (and so is the connection).
    The parser's callbacks (`on_*`) are called by llhttp while `feed` runs."""

    __slots__ = (
        "_body",
        "_complete",
        "_eof",
        "_error",
        "_events",
        "_framed",
        "_head",
        "_head_buffer",
        "_headers",
        "_heads_seen",
        "_leftover",
        "_method",
        "_parser",
        "_reached_end",
        "_reusable",
        "max_body",
        "received",
        "served",
    )

    def __init__(self, max_body: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.max_body = max_body
        self.served = 0
        """Requests started on this connection, the current one included."""
        self.received = 0
        """Bytes of the current request's answer received so far."""
        self._begin("GET")

    def _begin(self, method: str) -> None:
        """A fresh parser and empty state for the answer to a `method` request."""
        self._method = method
        self._parser = httptools.HttpResponseParser(self)
        self._events: deque[Head | bytes | None] = deque()  # None: the response is complete
        self._headers: dict[str, str] = {}
        self._head: Head | None = None
        self._head_buffer = bytearray()  # what arrived before the head was whole (capped)
        self._heads_seen = 0  # heads parsed, 1xx ones included
        self._body: BodyDecoder | None = None
        self._framed = False
        self._complete = False
        self._reusable = False
        self._leftover = False
        self._eof = False
        self._error: BaseException | None = None
        self._reached_end: End | None = None

    def closed_unanswered(self, exc: BaseException) -> bool:
        """Whether `exc` means the server had closed this kept-alive connection before the
        current request reached it: an earlier request was served on it, nothing of this
        answer arrived, and the connection was reset or ended (not a timeout). Such a
        request was never read by the server, so it may be sent again on a new connection."""
        closed = isinstance(exc, ProtocolError) or (
            isinstance(exc, OSError) and not isinstance(exc, TimeoutError)
        )
        return closed and self.served > 1 and self.received == 0

    def start(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> bytes:
        """The bytes of the next request (`headers` from `request_headers`, which checked them)."""
        if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
            raise UnusableRequest(
                f"the request cannot be sent as given (method {method!r}, target {target!r}); check the URL"
            )
        self.served += 1
        self.received = 0
        self._begin(method)
        lines = [b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), target.encode("ascii"))]
        lines += [b"%s: %s\r\n" % pair for pair in headers]
        lines.append(b"\r\n")
        if body:
            lines.append(body)
        return b"".join(lines)

    # -- llhttp's callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:  # a second response: nothing asked for it
            self._leftover = True
            raise _Stop
        self._headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head is not None:
            return  # a trailer of a chunked body: not a header of the response
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip(" \t")  # llhttp keeps trailing spaces
        headers = self._headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        self._heads_seen += 1
        status = self._parser.get_status_code()
        if status < 200:
            return  # a 1xx: the real response follows
        headers = self._headers
        coding = headers.get("transfer-encoding")
        if coding is not None and coding.lower() != "chunked":
            raise ProtocolError(f"unsupported Transfer-Encoding {coding!r} in the response")
        self._framed = coding is not None or "content-length" in headers
        self._head = Head(status, headers)
        self._body = BodyDecoder(headers.get("content-encoding", ""), self.max_body)
        self._events.append(self._head)
        if self._method == "HEAD":  # llhttp does not know the method: it would wait for a body
            tokens = headers.get("connection", "").lower()
            self._finish(self._parser.get_http_version() == "1.1" and "close" not in tokens)
            raise _Stop

    def on_body(self, body: bytes) -> None:
        assert self._body is not None
        piece = self._body.decode(body)
        if piece:
            self._events.append(piece)

    def on_message_complete(self) -> None:
        if self._head is None:
            return  # a 1xx ended
        parser = self._parser
        self._finish(parser.get_http_version() == "1.1" and parser.should_keep_alive())

    def _finish(self, reusable: bool) -> None:
        assert self._body is not None
        self._body.finish()
        self._complete = True
        self._reusable = reusable
        self._events.append(None)

    # -- the socket's side --------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Hand over bytes the socket gave; ``b""`` when the server ended the connection."""
        self.received += len(data)
        if not data:
            self._eof = True
        elif self._complete:  # empty lines are skipped (as llhttp does); anything else is not
            self._leftover = self._leftover or bool(data.strip(b"\r\n"))
        elif self._error is None:
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        waiting_for_head = self._head is None
        if waiting_for_head:
            self._head_buffer += data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, _Stop):
                self._error = cause if cause is not None else ProtocolError(str(exc))
            elif waiting_for_head and self._method == "HEAD" and not self._leftover:
                self._leftover = self._bytes_past_the_heads()
        except httptools.HttpParserError as exc:
            if self._complete:
                self._leftover = True  # bytes after the response that are not a response
            else:
                self._error = ProtocolError(
                    f"malformed response from the server ({exc or type(exc).__name__})"
                )
        if self._head is None and len(self._head_buffer) > MAX_HEAD_BYTES:
            self._error = ProtocolError(
                f"the response's status line and headers are longer than {MAX_HEAD_BYTES} bytes"
            )

    def _bytes_past_the_heads(self) -> bool:
        """Whether anything followed the head of a HEAD answer (1xx heads before it count)."""
        end = -4
        for _ in range(self._heads_seen):
            end = self._head_buffer.find(b"\r\n\r\n", end + 4)
            if end < 0:
                return True  # heads not ended by CRLF CRLF: cannot tell, so do not reuse
        return bool(self._head_buffer[end + 4 :].strip(b"\r\n"))

    def next_event(self) -> Head | bytes | End | NeedData:
        """The next thing the response says (body bytes decoded)."""
        if self._reached_end is not None:
            return self._reached_end
        if self._events:
            event = self._events.popleft()
            if event is not None:
                return event
            self._reached_end = End(self._reusable and not self._leftover and not self._eof)
            return self._reached_end
        if self._error is not None:
            raise self._error
        if not self._eof:
            return NEED_DATA
        if self._body is not None and not self._framed:  # its body ends with the connection
            self._body.finish()
            self._reached_end = End(False)
            return self._reached_end
        raise ProtocolError("the server closed the connection before the response ended")

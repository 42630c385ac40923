"""HTTP/1.1 on the wire, IO-free, parsed by h11: request bytes out, response events in.

One `ClientConnection` (one `h11.Connection`) per socket, reused request after request;
no pipelining. The socket shells (`sync_pool`, `async_pool`) feed it received bytes and
read `Head`, decoded body bytes and `End` back out. h11 frames the messages and refuses
what is malformed (conflicting Content-Length, unknown Transfer-Encoding); `BodyDecoder`
inflates gzip/deflate and caps the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

import h11

from llava_bridge.backends._transport.bodies import DEFAULT_MAX_RESPONSE_BYTES, BodyDecoder
from llava_bridge.backends._transport.failures import UnusableRequest

__all__ = [
    "NEED_DATA",
    "ClientConnection",
    "End",
    "Head",
    "NeedData",
    "Origin",
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


class ClientConnection:
    """One HTTP/1.1 connection's protocol state (an `h11.Connection`), request after request.

    `start` gives a request's bytes; then `feed` what the socket gave (``b""`` for its
    end) and call `next_event` until it answers `NEED_DATA`. h11's `RemoteProtocolError`,
    `BadBody` and `ResponseLimitExceeded` say the response is unusable (and so is the
    connection)."""

    __slots__ = ("_body", "_end", "_h11", "max_body", "received", "served")

    def __init__(self, max_body: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._body: BodyDecoder | None = None
        self._end: End | None = None
        self.max_body = max_body
        self.served = 0
        """Requests started on this connection, the current one included."""
        self.received = 0
        """Bytes of the current request's answer received so far."""

    def closed_unanswered(self, exc: BaseException) -> bool:
        """Whether `exc` means the server had closed this kept-alive connection before the
        current request reached it: an earlier request was served on it, nothing of this
        answer arrived, and the connection was reset or ended (not a timeout). Such a
        request was never read by the server, so it may be sent again on a new connection."""
        closed = isinstance(exc, h11.RemoteProtocolError) or (
            isinstance(exc, OSError) and not isinstance(exc, TimeoutError)
        )
        return closed and self.served > 1 and self.received == 0

    def start(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> bytes:
        """The bytes of the next request (`headers` from `request_headers`)."""
        conn = self._h11
        if conn.our_state is h11.DONE:
            conn.start_next_cycle()  # only reached after a clean, reusable End
        self._body = self._end = None
        self.served += 1
        self.received = 0
        try:
            data = conn.send(h11.Request(method=method, target=target, headers=headers))
            if body:
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise UnusableRequest(
                f"the request cannot be sent as given ({exc}); check the URL and headers"
            ) from None
        assert data is not None
        return data

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        self._h11.receive_data(data)

    def next_event(self) -> Head | bytes | End | NeedData:
        """The next thing the response says (body bytes decoded)."""
        if self._end is not None:
            return self._end
        conn = self._h11
        while True:
            event = conn.next_event()
            if type(event) is h11.Data:
                assert self._body is not None
                piece = self._body.decode(bytes(event.data))
                if piece:
                    return piece
            elif type(event) is h11.Response:
                headers: dict[str, str] = {}
                for raw_name, raw_value in event.headers:
                    name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
                    headers[name] = f"{headers[name]}, {value}" if name in headers else value
                self._body = BodyDecoder(headers.get("content-encoding", ""), self.max_body)
                return Head(event.status_code, headers)
            elif type(event) is h11.EndOfMessage:
                assert self._body is not None
                self._body.finish()
                leftover, closed = conn.trailing_data
                reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE
                self._end = End(reusable and not leftover and not closed)
                return self._end
            elif event is h11.NEED_DATA:
                return NEED_DATA
            elif type(event) is h11.ConnectionClosed:
                self._end = End(False)
                return self._end
            elif type(event) is not h11.InformationalResponse:  # 1xx: the real response follows
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} from the server")

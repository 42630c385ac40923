"""The IO-free HTTP/1.1 pieces (httptools under `ClientConnection`), `origin_and_target`, the request's
headers and bytes, `SseParser`.

Every response in the table is parsed twice, fed whole and fed one byte at a time;
both must tell the same story (body pieces are joined before comparing).
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import pytest

from llava_bridge.backends._transport import http11 as _h1
from llava_bridge.backends._transport.bodies import BadBody
from llava_bridge.backends._transport.http11 import (
    NEED_DATA,
    ClientConnection,
    End,
    Head,
    Origin,
    UnusableRequest,
    origin_and_target,
    request_headers,
)
from llava_bridge.backends._transport.sse import SseEvent, SseParser

ProtocolError = (_h1.ProtocolError, BadBody)
"""What an unusable response raises: the parser's refusal, or a body that cannot be decoded."""


def ResponseParser(method: str = "GET") -> ClientConnection:
    """A connection that has sent a `method` request, ready to parse its response."""
    connection = ClientConnection()
    connection.start(
        method, "/", [(b"Host", b"example.com")], b"" if method in ("POST", "PUT", "PATCH") else None
    )
    return connection


def encode_request(
    method: str, origin: Origin, target: str, headers: dict[str, str], body: bytes | None
) -> bytes:
    """The bytes a fresh connection sends for this request."""
    return ClientConnection().start(method, target, request_headers(method, origin, headers, body), body)


# -- the response table ---------------------------------------------------------------------------

ERROR = "ProtocolError"
GZIPPED = gzip.compress(b"hello, compressed world " * 20)
DEFLATED = zlib.compress(b"deflated body " * 20)
PLAIN = b"hello, compressed world " * 20


def _chunked(data: bytes, *sizes: int) -> bytes:
    """`data` in chunks of the given sizes (the rest in one last chunk), then the zero chunk."""
    out, at = b"", 0
    for size in (*sizes, len(data)):
        piece = data[at : at + size]
        if piece:
            out += b"%x\r\n%s\r\n" % (len(piece), piece)
        at += len(piece)
    return out + b"0\r\n\r\n"


def _head(status: bytes = b"200 OK", *headers: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return version + b" " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


CHUNKED = Head(200, {"transfer-encoding": "chunked"})


def _chunked_case(name: str, body: bytes, *events: Any) -> tuple[str, bytes, str, list[Any]]:
    """A GET whose answer is a chunked 200 with the raw `body`, expected to give `events`."""
    return (name, _head(b"200 OK", b"Transfer-Encoding: chunked") + body, "GET", [CHUNKED, *events])


# (id, raw bytes, request method, expected events: Head, the joined body, End; or ERROR last)
CASES: list[tuple[str, bytes, str, list[Any]]] = [
    (
        "content-length",
        _head(b"200 OK", b"Content-Length: 5", b"Content-Type: text/plain") + b"hello",
        "GET",
        [Head(200, {"content-length": "5", "content-type": "text/plain"}), b"hello", End(True)],
    ),
    (
        "content-length-zero",
        _head(b"200 OK", b"Content-Length: 0"),
        "GET",
        [Head(200, {"content-length": "0"}), End(True)],
    ),
    (
        "content-length-repeated-same-value",  # refused: llhttp takes no repeat, even an equal one
        _head(b"200 OK", b"Content-Length: 3", b"Content-Length: 3") + b"abc",
        "GET",
        [ERROR],
    ),
    (
        "status-without-reason",
        _head(b"404") + b"",
        "HEAD",
        [Head(404, {}), End(True)],
    ),
    (
        "error-status-with-body",
        _head(b"503 Service Unavailable", b"Content-Length: 4", b"Retry-After: 2") + b"busy",
        "GET",
        [Head(503, {"content-length": "4", "retry-after": "2"}), b"busy", End(True)],
    ),
    _chunked_case("chunked", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world", End(True)),
    _chunked_case(
        "chunked-uppercase-hex-and-padding", b"00A\r\n0123456789\r\n000\r\n\r\n", b"0123456789", End(True)
    ),
    (
        "chunked-extensions",
        _head(b"200 OK", b"Transfer-Encoding: chunked")
        + b'5;name=value\r\nhello\r\n1;quoted="a;b"\r\n!\r\n0;last\r\n\r\n',  # no space before ;
        "GET",
        [Head(200, {"transfer-encoding": "chunked"}), b"hello!", End(True)],
    ),
    (
        "chunked-trailers",
        _head(b"200 OK", b"Transfer-Encoding: chunked", b"Trailer: X-Checksum")
        + b"3\r\nabc\r\n0\r\nX-Checksum: 123\r\nX-Other: 4\r\n\r\n",
        "GET",
        [Head(200, {"transfer-encoding": "chunked", "trailer": "X-Checksum"}), b"abc", End(True)],
    ),
    (
        "chunked-with-content-length",  # refused: both framings at once can smuggle a response
        _head(b"200 OK", b"Content-Length: 100", b"Transfer-Encoding: chunked") + b"2\r\nok\r\n0\r\n\r\n",
        "GET",
        [ERROR],
    ),
    (
        "chunked-connection-close",
        _head(b"200 OK", b"Transfer-Encoding: chunked", b"Connection: close") + b"2\r\nok\r\n0\r\n\r\n",
        "GET",
        [Head(200, {"transfer-encoding": "chunked", "connection": "close"}), b"ok", End(False)],
    ),
    (
        "close-delimited",
        _head(b"200 OK", b"Content-Type: text/plain") + b"until the end",
        "GET",
        [Head(200, {"content-type": "text/plain"}), b"until the end", End(False)],
    ),
    (
        "close-delimited-empty",
        _head(b"200 OK"),
        "GET",
        [Head(200, {}), End(False)],
    ),
    (
        "http10-no-keepalive",
        _head(b"200 OK", b"Content-Length: 2", version=b"HTTP/1.0") + b"ok",
        "GET",
        [Head(200, {"content-length": "2"}), b"ok", End(False)],
    ),
    (
        "http10-keepalive",
        _head(b"200 OK", b"Content-Length: 2", b"Connection: Keep-Alive", version=b"HTTP/1.0") + b"ok",
        "GET",
        [
            Head(200, {"content-length": "2", "connection": "Keep-Alive"}),
            b"ok",
            End(False),
        ],  # 1.0: not reused
    ),
    (
        "http10-close-delimited-despite-keepalive",
        _head(b"200 OK", b"Connection: keep-alive", version=b"HTTP/1.0") + b"abc",
        "GET",
        [Head(200, {"connection": "keep-alive"}), b"abc", End(False)],
    ),
    (
        "connection-close",
        _head(b"200 OK", b"Content-Length: 2", b"Connection: close") + b"ok",
        "GET",
        [Head(200, {"content-length": "2", "connection": "close"}), b"ok", End(False)],
    ),
    (
        "connection-close-in-a-list",
        _head(b"200 OK", b"Content-Length: 2", b"Connection: Upgrade, CLOSE") + b"ok",
        "GET",
        [Head(200, {"content-length": "2", "connection": "Upgrade, CLOSE"}), b"ok", End(False)],
    ),
    (
        "100-continue-first",
        _head(b"100 Continue") + _head(b"200 OK", b"Content-Length: 2") + b"ok",
        "POST",
        [Head(200, {"content-length": "2"}), b"ok", End(True)],
    ),
    (
        "several-1xx-first",
        _head(b"100 Continue")
        + _head(b"103 Early Hints", b"Link: </a.css>; rel=preload")
        + _head(b"201 Created", b"Content-Length: 0"),
        "POST",
        [Head(201, {"content-length": "0"}), End(True)],
    ),
    (
        "204-with-content-length",
        _head(b"204 No Content", b"Content-Length: 10"),
        "DELETE",
        [Head(204, {"content-length": "10"}), End(True)],
    ),
    (
        "304-with-content-length",
        _head(b"304 Not Modified", b"Content-Length: 100", b'ETag: "x"'),
        "GET",
        [Head(304, {"content-length": "100", "etag": '"x"'}), End(True)],
    ),
    (
        "head-with-content-length",
        _head(b"200 OK", b"Content-Length: 5000"),
        "HEAD",
        [Head(200, {"content-length": "5000"}), End(True)],
    ),
    (
        "head-with-chunked",
        _head(b"200 OK", b"Transfer-Encoding: chunked"),
        "HEAD",
        [Head(200, {"transfer-encoding": "chunked"}), End(True)],
    ),
    (
        "gzip-content-length",
        _head(b"200 OK", b"Content-Encoding: gzip", b"Content-Length: %d" % len(GZIPPED)) + GZIPPED,
        "GET",
        [Head(200, {"content-encoding": "gzip", "content-length": str(len(GZIPPED))}), PLAIN, End(True)],
    ),
    (
        "gzip-chunked-split-mid-stream",
        _head(b"200 OK", b"Content-Encoding: GZIP", b"Transfer-Encoding: chunked")
        + _chunked(GZIPPED, 3, 7, 1, 10),
        "GET",
        [Head(200, {"content-encoding": "GZIP", "transfer-encoding": "chunked"}), PLAIN, End(True)],
    ),
    (
        "gzip-close-delimited",
        _head(b"200 OK", b"Content-Encoding: gzip") + GZIPPED,
        "GET",
        [Head(200, {"content-encoding": "gzip"}), PLAIN, End(False)],
    ),
    (
        "deflate-content-length",
        _head(b"200 OK", b"Content-Encoding: deflate", b"Content-Length: %d" % len(DEFLATED)) + DEFLATED,
        "GET",
        [
            Head(200, {"content-encoding": "deflate", "content-length": str(len(DEFLATED))}),
            b"deflated body " * 20,
            End(True),
        ],
    ),
    (
        "deflate-chunked",
        _head(b"200 OK", b"Content-Encoding: deflate", b"Transfer-Encoding: chunked") + _chunked(DEFLATED, 2),
        "GET",
        [
            Head(200, {"content-encoding": "deflate", "transfer-encoding": "chunked"}),
            b"deflated body " * 20,
            End(True),
        ],
    ),
    (
        "identity-encoding",
        _head(b"200 OK", b"Content-Encoding: identity", b"Content-Length: 2") + b"ok",
        "GET",
        [Head(200, {"content-encoding": "identity", "content-length": "2"}), b"ok", End(True)],
    ),
    (
        "repeated-headers-joined",
        _head(
            b"200 OK",
            b"Set-Cookie: a=1",
            b"X-Many: one",
            b"set-cookie: b=2",
            b"X-MANY:two",
            b"x-many:   three  ",
            b"Content-Length: 0",
        ),
        "GET",
        [
            Head(200, {"set-cookie": "a=1, b=2", "x-many": "one, two, three", "content-length": "0"}),
            End(True),
        ],
    ),
    (
        "header-value-with-colon-and-empty-value",
        _head(b"200 OK", b"Location: http://h:8080/x", b"X-Empty:", b"Content-Length: 0"),
        "GET",
        [Head(200, {"location": "http://h:8080/x", "x-empty": "", "content-length": "0"}), End(True)],
    ),
    # -- malformed ---------------------------------------------------------------------------------
    ("eof-before-any-byte", b"", "GET", [ERROR]),
    ("eof-in-head", b"HTTP/1.1 200 OK\r\nContent-Len", "GET", [ERROR]),
    ("status-line-http2", _head(b"200 OK", version=b"HTTP/2"), "GET", [ERROR]),
    ("status-line-not-http", b"ICY 200 OK\r\n\r\n", "GET", [ERROR]),
    ("status-line-garbage", b"hello there\r\n\r\n", "GET", [ERROR]),
    ("status-line-no-code", _head(b"OK"), "GET", [ERROR]),
    ("status-line-two-digit-code", _head(b"20 OK"), "GET", [ERROR]),
    ("status-line-four-digit-code", _head(b"2000 OK", b"Content-Length: 0"), "GET", [ERROR]),
    ("status-line-code-with-letters", _head(b"2x0 OK"), "GET", [ERROR]),
    ("status-line-superscript-digit", b"HTTP/1.1 2\xb20 OK\r\nContent-Length: 0\r\n\r\n", "GET", [ERROR]),
    ("status-line-no-space-after-code", _head(b"200OK", b"Content-Length: 0"), "GET", [ERROR]),
    ("header-without-colon", _head(b"200 OK", b"Content-Length 0"), "GET", [ERROR]),
    ("header-empty-name", _head(b"200 OK", b": value"), "GET", [ERROR]),
    (  # refused: llhttp takes no obsolete line folding (RFC 9112 5.2 lets a client refuse it)
        "header-obs-fold",
        _head(b"200 OK", b"X-A: one", b" continued", b"Content-Length: 0"),
        "GET",
        [ERROR],
    ),
    ("header-space-before-colon", _head(b"200 OK", b"Content-Length : 2") + b"ok", "GET", [ERROR]),
    ("bad-content-length", _head(b"200 OK", b"Content-Length: abc"), "GET", [ERROR]),
    ("content-length-list", _head(b"200 OK", b"Content-Length: 2, 40") + b"hi", "GET", [ERROR]),
    (
        "content-length-differing-repeats",
        _head(b"200 OK", b"Content-Length: 2", b"Content-Length: 4"),
        "GET",
        [ERROR],
    ),
    (
        "transfer-encoding-xchunkedx",  # not chunked: refused rather than read to the end
        _head(b"200 OK", b"Transfer-Encoding: xchunkedx") + b"5\r\nhello\r\n0\r\n\r\n",
        "GET",
        [ERROR],
    ),
    ("transfer-encoding-gzip-chunked", _head(b"200 OK", b"Transfer-Encoding: gzip, chunked"), "GET", [ERROR]),
    ("transfer-encoding-identity", _head(b"200 OK", b"Transfer-Encoding: identity") + b"ok", "GET", [ERROR]),
    ("negative-content-length", _head(b"200 OK", b"Content-Length: -1"), "GET", [ERROR]),
    ("superscript-content-length", _head(b"200 OK", b"Content-Length: \xb9"), "GET", [ERROR]),
    ("unsupported-content-encoding", _head(b"200 OK", b"Content-Encoding: br"), "GET", [ERROR]),
    _chunked_case("bad-chunk-size", b"zz\r\nhello\r\n0\r\n\r\n", ERROR),
    _chunked_case("empty-chunk-size", b"\r\nhello\r\n0\r\n\r\n", ERROR),
    _chunked_case("negative-chunk-size", b"-1\r\nhello\r\n0\r\n\r\n", ERROR),
    _chunked_case("signed-chunk-size", b"+5\r\nhello\r\n0\r\n\r\n", ERROR),
    _chunked_case("0x-chunk-size", b"0x5\r\nhello\r\n0\r\n\r\n", ERROR),
    _chunked_case("underscore-chunk-size", b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n", ERROR),
    _chunked_case("chunk-longer-than-its-size", b"3\r\nhello\r\n0\r\n\r\n", b"hel", ERROR),
    (
        "truncated-content-length-body",
        _head(b"200 OK", b"Content-Length: 10") + b"hello",
        "GET",
        [Head(200, {"content-length": "10"}), b"hello", ERROR],
    ),
    _chunked_case("truncated-chunk", b"a\r\nhello", b"hello", ERROR),
    _chunked_case("chunked-without-last-chunk", b"5\r\nhello\r\n", b"hello", ERROR),
    _chunked_case("chunked-eof-in-trailers", b"2\r\nok\r\n0\r\nX-T: 1\r\n", b"ok", ERROR),
    (
        "over-long-head-unterminated",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (_h1.MAX_HEAD_BYTES + 1),
        "GET",
        [ERROR],
    ),
]


def _record(parser: ResponseParser, events: list[Any]) -> bool:
    """Append the parser's events until it needs data; True once the response ended (or broke)."""
    while True:
        try:
            event = parser.next_event()
        except ProtocolError:
            events.append(ERROR)
            return True
        if event is NEED_DATA:
            return False
        assert event != b"", "the parser gave an empty body piece (it would be taken for the end)"
        events.append(event)
        if isinstance(event, End):
            return True


def _joined(events: list[Any]) -> list[Any]:
    """Consecutive body pieces as one; no empty pieces allowed."""
    out: list[Any] = []
    for event in events:
        if isinstance(event, bytes):
            assert event, "the parser gave an empty body piece"
            if out and isinstance(out[-1], bytes):
                out[-1] += event
                continue
        out.append(event)
    return out


def parse_whole(data: bytes, method: str = "GET", *, eof: bool = True) -> list[Any]:
    """Fed in one piece; the end of the connection comes next (as in the pools) only if the
    response needs it."""
    parser = ResponseParser(method)
    parser.feed(data)
    events: list[Any] = []
    if not _record(parser, events) and eof:
        parser.feed(b"")
        _record(parser, events)
    return _joined(events)


def parse_bytewise(data: bytes, method: str = "GET") -> list[Any]:
    """Fed one byte at a time, reading events after each; the end of the connection comes
    last, unless the response ended first."""
    parser = ResponseParser(method)
    events: list[Any] = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        if _record(parser, events):
            return _joined(events)
    parser.feed(b"")
    _record(parser, events)
    return _joined(events)


@pytest.mark.parametrize(("raw", "method", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_response_fed_whole(raw: bytes, method: str, expected: list[Any]) -> None:
    assert parse_whole(raw, method) == expected


@pytest.mark.parametrize(("raw", "method", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_response_fed_one_byte_at_a_time(raw: bytes, method: str, expected: list[Any]) -> None:
    assert parse_bytewise(raw, method) == expected


FRAMED = [
    (_head(b"200 OK", b"Content-Length: 2") + b"ok", "GET"),
    (_head(b"200 OK", b"Transfer-Encoding: chunked") + b"2\r\nok\r\n0\r\n\r\n", "GET"),
    (_head(b"204 No Content"), "GET"),
    (_head(b"200 OK", b"Content-Length: 7"), "HEAD"),
]
"""Answers whose end the parser sees without the connection ending: (raw, request method)."""
FRAMED_IDS = ["content-length", "chunked", "204", "head"]

KEEPALIVE_CASES = [c for c in CASES if c[3][-1] == End(True)]


@pytest.mark.parametrize(
    ("raw", "method", "expected"), [c[1:] for c in KEEPALIVE_CASES], ids=[c[0] for c in KEEPALIVE_CASES]
)
def test_a_framed_response_ends_without_waiting_for_the_connection_to_close(
    raw: bytes, method: str, expected: list[Any]
) -> None:
    assert parse_whole(raw, method, eof=False) == expected


def test_close_delimited_body_needs_the_end_of_the_connection() -> None:
    parser = ResponseParser()
    parser.feed(_head(b"200 OK") + b"abc")
    assert parser.next_event() == Head(200, {})
    assert parser.next_event() == b"abc"
    assert parser.next_event() is NEED_DATA
    parser.feed(b"def")
    assert parser.next_event() == b"def"
    assert parser.next_event() is NEED_DATA
    parser.feed(b"")
    assert parser.next_event() == End(False)


def test_incomplete_head_needs_data_then_completes() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"\r\no")
    assert parser.next_event() == Head(200, {"content-length": "2"})
    assert parser.next_event() == b"o"
    assert parser.next_event() is NEED_DATA
    parser.feed(b"k")
    assert parser.next_event() == b"k"
    assert parser.next_event() == End(True)


def test_a_1xx_alone_is_not_the_response() -> None:
    parser = ResponseParser("POST")
    parser.feed(_head(b"100 Continue"))
    assert parser.next_event() is NEED_DATA
    parser.feed(_head(b"200 OK", b"Content-Length: 0"))
    assert parser.next_event() == Head(200, {"content-length": "0"})
    assert parser.next_event() == End(True)


@pytest.mark.parametrize(
    "extra",
    [b"HTTP/1.1 200 OK\r\n", b"x", b"\r\nx"],
    ids=["a-second-response", "one-byte", "a-stray-crlf-then-a-byte"],
)
@pytest.mark.parametrize(("response", "method"), FRAMED, ids=FRAMED_IDS)
def test_leftover_bytes_after_the_response_make_the_connection_unusable(
    response: bytes, method: str, extra: bytes
) -> None:
    events = parse_whole(response + extra, method, eof=False)
    assert events[-1] == End(False)
    assert parse_whole(response, method, eof=False)[-1] == End(True)


@pytest.mark.parametrize("extra", [b"\r\n", b"\n", b"\r\n\r\n"], ids=["crlf", "lf", "two-crlf"])
@pytest.mark.parametrize(("response", "method"), FRAMED, ids=FRAMED_IDS)
def test_stray_empty_lines_after_the_response_are_skipped(response: bytes, method: str, extra: bytes) -> None:
    """RFC 9112 2.2 lets a recipient skip empty lines before a message; llhttp does, and so
    does `feed` when they come in a later read. The connection stays reusable."""
    assert parse_whole(response + extra, method, eof=False)[-1] == End(True)
    parser = ResponseParser(method)
    parser.feed(response)
    parser.feed(extra)
    events: list[Any] = []
    assert _record(parser, events)
    assert events[-1] == End(True)


def test_leftover_bytes_arriving_in_the_last_piece_of_the_body() -> None:
    parser = ResponseParser()
    parser.feed(_head(b"200 OK", b"Content-Length: 4") + b"ab")
    assert parser.next_event() == Head(200, {"content-length": "4"})
    assert parser.next_event() == b"ab"
    parser.feed(b"cdEXTRA")
    assert parser.next_event() == b"cd"
    assert parser.next_event() == End(False)


def test_gzip_body_decoded_when_split_anywhere() -> None:
    head = _head(b"200 OK", b"Content-Encoding: gzip", b"Content-Length: %d" % len(GZIPPED))
    for cut in range(1, len(GZIPPED)):
        parser = ResponseParser()
        parser.feed(head + GZIPPED[:cut])
        events: list[Any] = []
        assert not _record(parser, events)
        parser.feed(GZIPPED[cut:])
        assert _record(parser, events)
        assert _joined(events) == [
            Head(200, {"content-encoding": "gzip", "content-length": str(len(GZIPPED))}),
            PLAIN,
            End(True),
        ], cut


def test_corrupt_gzip_body_is_a_protocol_error() -> None:
    body = b"this is not gzip data"
    raw = _head(b"200 OK", b"Content-Encoding: gzip", b"Content-Length: %d" % len(body)) + body
    assert parse_whole(raw) == [
        Head(200, {"content-encoding": "gzip", "content-length": str(len(body))}),
        ERROR,
    ]


def test_cut_short_gzip_body_is_a_protocol_error() -> None:
    body = GZIPPED[:-6]  # the stream's end (its CRC and length) is missing
    raw = _head(b"200 OK", b"Content-Encoding: gzip", b"Content-Length: %d" % len(body)) + body
    events = parse_whole(raw)
    assert events[0] == Head(200, {"content-encoding": "gzip", "content-length": str(len(body))})
    assert events[-1] == ERROR


def test_empty_gzip_labelled_body_is_just_empty() -> None:
    raw = _head(b"204 No Content", b"Content-Encoding: gzip")
    assert parse_whole(raw) == [Head(204, {"content-encoding": "gzip"}), End(True)]


@pytest.mark.parametrize("over", [-4, -3, -2, -1, 0, 1, 2, 10])
def test_head_size_cap_when_the_head_arrives_in_pieces(monkeypatch: pytest.MonkeyPatch, over: int) -> None:
    """The parser caps what it buffers of an unfinished head (a complete head that came in one
    read, at most READ_SIZE, is taken whole)."""
    monkeypatch.setattr(_h1, "MAX_HEAD_BYTES", 200)
    prefix = b"HTTP/1.1 200 OK\r\nX-Pad: "
    suffix = b"\r\nContent-Length: 0\r\n\r\n"
    raw = prefix + b"a" * (200 + over - len(prefix) - len(suffix)) + suffix
    assert len(raw) == 200 + over
    events = parse_bytewise(raw)
    if over <= 0:
        assert events[-1] == End(True)
    if over >= 2:
        assert events == [ERROR]


def test_an_endless_head_is_refused_at_the_cap() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (_h1.MAX_HEAD_BYTES + 10))
    with pytest.raises(ProtocolError):
        parser.next_event()


def test_head_within_the_cap_is_accepted_whole() -> None:
    pad = b"a" * (_h1.MAX_HEAD_BYTES - 100)
    raw = b"HTTP/1.1 200 OK\r\nX-Big: " + pad + b"\r\nContent-Length: 0\r\n\r\n"
    assert parse_whole(raw) == [Head(200, {"x-big": pad.decode(), "content-length": "0"}), End(True)]


def test_end_is_repeated_once_reached() -> None:
    parser = ResponseParser()
    parser.feed(_head(b"200 OK", b"Content-Length: 0"))
    assert parser.next_event() == Head(200, {"content-length": "0"})
    assert parser.next_event() == End(True)
    assert parser.next_event() == End(True)


# -- origin_and_target / encode_request -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "params", "origin", "target", "host"),
    [
        ("http://example.com/a/b", None, Origin("http", "example.com", 80), "/a/b", "example.com"),
        ("http://example.com:80/", None, Origin("http", "example.com", 80), "/", "example.com"),
        ("https://example.com:443/x", None, Origin("https", "example.com", 443), "/x", "example.com"),
        ("https://example.com:80/x", None, Origin("https", "example.com", 80), "/x", "example.com:80"),
        ("http://example.com:443/x", None, Origin("http", "example.com", 443), "/x", "example.com:443"),
        ("http://127.0.0.1:8080", None, Origin("http", "127.0.0.1", 8080), "/", "127.0.0.1:8080"),
        ("HTTPS://Example.COM/Path", None, Origin("https", "example.com", 443), "/Path", "example.com"),
        ("http://[::1]:8080/p", None, Origin("http", "::1", 8080), "/p", "[::1]:8080"),
        ("https://[2001:db8::1]/", None, Origin("https", "2001:db8::1", 443), "/", "[2001:db8::1]"),
        ("http://h/p?a=1", {"b": "2"}, Origin("http", "h", 80), "/p?a=1&b=2", "h"),
        ("http://h/p?", {"b": "2"}, Origin("http", "h", 80), "/p?b=2", "h"),
        ("http://h/p", {"q": "a b&c=d", "x": "é"}, Origin("http", "h", 80), "/p?q=a+b%26c%3Dd&x=%C3%A9", "h"),
        ("http://h/p#fragment", {}, Origin("http", "h", 80), "/p", "h"),
        ("http://h/a b/ü", None, Origin("http", "h", 80), "/a%20b/%C3%BC", "h"),
        ("http://h/already%20encoded", None, Origin("http", "h", 80), "/already%20encoded", "h"),
        ("http://h/x?q=a b", None, Origin("http", "h", 80), "/x?q=a%20b", "h"),
        ("http://user:pw@h:81/", None, Origin("http", "h", 81), "/", "h:81"),
    ],
)
def test_origin_and_target(
    url: str, params: dict[str, str] | None, origin: Origin, target: str, host: str
) -> None:
    assert origin_and_target(url, params) == (origin, target)
    assert origin.authority == host


@pytest.mark.parametrize(
    "url",
    [
        "http://h/a\r\nX-Injected: 1",
        "http://h/a\nb",
        "http://h/a\rb",
        "http://h/a b\tc",
        "http://h/?q=1\r\nX-Injected: 1",
        "http://h/a\x00b",
        "http://h/a\x7fb",
    ],
)
def test_no_control_character_or_space_of_a_url_reaches_the_wire(url: str) -> None:
    origin, target = origin_and_target(url)
    line = encode_request("GET", origin, target, {}, None).split(b"\r\n")[0]
    assert line.startswith(b"GET /") and line.endswith(b" HTTP/1.1")
    sent_target = line[len(b"GET ") : -len(b" HTTP/1.1")]
    assert all(0x21 <= byte < 0x7F for byte in sent_target), sent_target
    assert b"X-Injected" not in encode_request("GET", origin, target, {}, None).split(b"\r\n", 1)[1]


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/a b"),
        ("GET", "/a\r\nX-Injected: 1"),
        ("GET", ""),
        ("GET", "/\u00e9"),
        ("G ET", "/"),
        ("", "/"),
    ],
)
def test_a_request_line_that_would_break_is_refused(method: str, target: str) -> None:
    with pytest.raises(UnusableRequest, match="check the URL"):
        ClientConnection().start(method, target, [(b"Host", b"h")], None)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h/",
        "file:///etc/passwd",
        "h/path",
        "//h/path",
        "http:///no-host",
        "http://:80/",
        "http://h:99999/",
        "http://h:0/",
        "http://h:port/",
        "http://[::1/",
    ],
)
def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(UnusableRequest):
        origin_and_target(url)


def test_encode_get_request() -> None:
    origin, target = origin_and_target("http://127.0.0.1:8080/a", {"x": "1"})
    data = encode_request("GET", origin, target, {"Accept": "*/*", "Authorization": "Key k"}, None)
    assert data == (
        b"GET /a?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\nAuthorization: Key k\r\n\r\n"
    )


def test_encode_post_request_with_body() -> None:
    origin, target = origin_and_target("https://queue.fal.run/fal-ai/x")
    data = encode_request("POST", origin, target, {"Content-Type": "application/json"}, b'{"a":1}')
    assert data == (
        b"POST /fal-ai/x HTTP/1.1\r\nHost: queue.fal.run\r\nContent-Type: application/json\r\n"
        b'Content-Length: 7\r\n\r\n{"a":1}'
    )


def test_a_callers_host_replaces_ours_and_framing_headers_are_ours() -> None:
    origin, target = origin_and_target("http://127.0.0.1:8080/a")
    headers = {"host": "gpu-box", "Content-Length": "999", "Transfer-Encoding": "chunked"}
    data = encode_request("POST", origin, target, headers, b"xy")
    assert data == b"POST /a HTTP/1.1\r\nHost: gpu-box\r\nContent-Length: 2\r\n\r\nxy"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_encode_bodyless_post_says_content_length_zero(method: str) -> None:
    origin, target = origin_and_target("http://h/")
    data = encode_request(method, origin, target, {}, None)
    assert data == f"{method} / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n".encode()


def test_encode_latin1_header_value() -> None:
    origin, target = origin_and_target("http://h/")
    assert encode_request("GET", origin, target, {"X-Name": "café"}, None).endswith(
        b"X-Name: caf\xe9\r\n\r\n"
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "one\r\nX-Injected: 1"},
        {"X-A": "one\nX-Injected: 1"},
        {"X-A": "one\rtwo"},
        {"X-A\r\nX-Injected": "1"},
        {"X A": "1"},
        {"X-A:": "1"},
        {"X:A": "1"},
        {"": "1"},
        {"X\tA": "1"},
        {"X-A": "€uro"},
        {"X-€": "1"},
    ],
)
def test_unusable_headers_are_refused(headers: dict[str, str]) -> None:
    origin, target = origin_and_target("http://h/")
    with pytest.raises(UnusableRequest):
        encode_request("GET", origin, target, headers, None)


# -- SseParser ------------------------------------------------------------------------------------

SSE_LINES = [
    ": a comment, used as a keep-alive",
    "event: status",
    'data: {"status": "IN_PROGRESS"}',
    "",
    "data: line one",
    "data: line two",
    "id: 7",
    "retry: 100",
    "",
    ":another comment",
    "data:no space after the colon",
    "data:  two spaces",
    "",
    "",
    "data: caf\u00e9 \u20ac \U0001f600",
    "",
    "event: done",
    "data",
    "",
    "event: ignored, no data",
    "",
    "event: last",
    "data: without a closing blank line",
]
SSE_EVENTS = [
    SseEvent('{"status": "IN_PROGRESS"}', "status"),
    SseEvent("line one\nline two"),
    SseEvent("no space after the colon\n two spaces"),
    SseEvent("caf\u00e9 \u20ac \U0001f600"),
    SseEvent("", "done"),
    SseEvent("without a closing blank line", "last"),
]
ENDINGS = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}


def _stream(ending: str) -> bytes:
    return ending.join(SSE_LINES).encode()


def _drain(parser: SseParser, events: list[SseEvent]) -> None:
    while (event := parser.next_event()) is not None:
        events.append(event)


def sse_events(*pieces: bytes) -> list[SseEvent]:
    parser = SseParser()
    events: list[SseEvent] = []
    for piece in pieces:
        assert piece
        parser.feed(piece)
        _drain(parser, events)
        assert not parser.done
    parser.feed(b"")
    _drain(parser, events)
    assert parser.done
    assert parser.next_event() is None
    return events


@pytest.mark.parametrize("ending", list(ENDINGS.values()), ids=list(ENDINGS))
def test_sse_whole(ending: str) -> None:
    assert sse_events(_stream(ending)) == SSE_EVENTS


@pytest.mark.parametrize("ending", list(ENDINGS.values()), ids=list(ENDINGS))
def test_sse_split_at_every_boundary(ending: str) -> None:
    data = _stream(ending)
    for cut in range(1, len(data)):
        assert sse_events(data[:cut], data[cut:]) == SSE_EVENTS, cut


def test_sse_split_at_every_pair_of_boundaries() -> None:
    data = _stream("\r\n")
    for first in range(1, len(data) - 1):
        for second in range(first + 1, len(data)):
            pieces = (data[:first], data[first:second], data[second:])
            assert sse_events(*pieces) == SSE_EVENTS, (first, second)


@pytest.mark.parametrize("ending", list(ENDINGS.values()), ids=list(ENDINGS))
def test_sse_one_byte_at_a_time(ending: str) -> None:
    data = _stream(ending)
    assert sse_events(*(data[i : i + 1] for i in range(len(data)))) == SSE_EVENTS


def test_sse_mixed_line_endings() -> None:
    data = b"data: a\r\n\ndata: b\r\rdata: c\n\r\ndata: d\r\n\r\n"
    assert sse_events(data) == [SseEvent("a"), SseEvent("b"), SseEvent("c"), SseEvent("d")]
    assert sse_events(*(data[i : i + 1] for i in range(len(data)))) == sse_events(data)


@pytest.mark.parametrize("ending", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_sse_event_is_handed_out_as_soon_as_its_blank_line_arrives(ending: str) -> None:
    parser = SseParser()
    parser.feed(f"data: first{ending}{ending}data: sec".encode())
    assert parser.next_event() == SseEvent("first")
    assert parser.next_event() is None
    parser.feed(f"ond{ending}".encode())
    assert parser.next_event() is None
    parser.feed(ending.encode())
    assert parser.next_event() == SseEvent("second")
    assert parser.next_event() is None
    assert not parser.done


def test_sse_cr_only_event_comes_at_once_and_a_following_lf_is_not_a_second_line_end() -> None:
    """A trailing CR ends its line at once; a LF first in the next piece completes that CRLF."""
    parser = SseParser()
    parser.feed(b"data: x\r\r")
    assert parser.next_event() == SseEvent("x")
    parser.feed(b"\ndata: y\r")
    assert parser.next_event() is None
    parser.feed(b"\n\r\n")
    assert parser.next_event() == SseEvent("y")


def test_sse_multibyte_character_split_across_chunks() -> None:
    text = "data: \U0001f600\u20ac\n\n".encode()
    start = text.index(b"\xf0")
    for cut in range(start + 1, start + 7):
        assert sse_events(text[:cut], text[cut:]) == [SseEvent("\U0001f600\u20ac")], cut


def test_sse_invalid_utf8_is_replaced() -> None:
    assert sse_events(b"data: a\xffb\n\n") == [SseEvent("a\ufffdb")]
    assert sse_events(b"data: a\xe2\x82") == [SseEvent("a\ufffd")]


def test_sse_done_flag() -> None:
    parser = SseParser()
    assert not parser.done
    parser.feed(b"data: x\n\n")
    assert parser.next_event() == SseEvent("x")
    assert parser.next_event() is None
    assert not parser.done
    parser.feed(b"")
    assert parser.next_event() is None
    assert parser.done
    parser.feed(b"data: after the end\n\n")
    assert parser.next_event() is None
    assert parser.done


def test_sse_last_event_without_blank_line_then_done() -> None:
    parser = SseParser()
    parser.feed(b"data: a\n\ndata: b")
    assert parser.next_event() == SseEvent("a")
    assert parser.next_event() is None
    parser.feed(b"")
    assert parser.next_event() == SseEvent("b")
    assert parser.done
    assert parser.next_event() is None


@pytest.mark.parametrize("tail", [b"\r", b"\r\n", b"\n", b"\r\r", b"\n\n", b"\r\n\r\n"])
def test_sse_stream_ending_in_line_endings(tail: bytes) -> None:
    assert sse_events(b"data: x" + tail) == [SseEvent("x")]


def test_sse_empty_stream() -> None:
    assert sse_events() == []

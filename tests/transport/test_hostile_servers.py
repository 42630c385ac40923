"""Hostile or broken servers on real loopback sockets, against every transport path:
our sync pool, our async pool, and httpx behind the adapter (sync and async).

Each case is a small script run by a server thread for each accepted connection. Time
bounds are generous (the deadline plus 2 s): they hold on a busy machine, and without
the limits these cases take 30 s or forever.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from llava_bridge.backends._transport.async_pool import AsyncPool
from llava_bridge.backends._transport.bodies import BadBody
from llava_bridge.backends._transport.choice import Transports
from llava_bridge.backends._transport.drivers import _AsyncPerformer, _SyncPerformer, run_async, run_sync
from llava_bridge.backends._transport.effects import (
    HttpRequest,
    HttpResponse,
    NextEvent,
    OpenStream,
    SseEvent,
    TransportFailure,
)
from llava_bridge.backends._transport.flows import Deadline, call
from llava_bridge.backends._transport.httpx_adapter import HttpxAsync, HttpxSync
from llava_bridge.backends._transport.sync_pool import SyncPool
from llava_bridge.backends.fal.backend import FalBackend
from llava_bridge.errors import (
    APIConnectionError,
    ConfigurationError,
    DeadlineExceededError,
    ResponseTooLargeError,
)
from llava_bridge.retry import Failure
from llava_bridge.types import VisionRequest

CAP = 1024 * 1024
"""The body cap the tests set (the default, 64 MiB, works the same, only slower to reach)."""
DEADLINE = 1.5
SLACK = 8.0
"""Room for a busy machine; what the tests rule out (a dripping or chattering peer) would take minutes."""

Script = Callable[[socket.socket, bytes], None]


class Server:
    """Runs `script` on each accepted connection (after reading the request head)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.accepted = 0
        self.streams = 0
        """Status streams opened (counted by the scripts that serve them)."""
        self.stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/"
        self._socks: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._socks.append(sock)
            thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, sock: socket.socket) -> None:
        sock.settimeout(None)
        try:
            while True:
                data = b""
                while b"\r\n\r\n" not in data:
                    piece = sock.recv(65536)
                    if not piece:
                        return
                    data += piece
                self.script(sock, data)
        except OSError:
            pass

    def stop(self) -> None:
        self.stopping.set()
        self._listener.close()
        for sock in self._socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(5.0)


# -- the transports, one face ---------------------------------------------------------------------


@dataclass
class Settings:
    max_attempts: int = 2
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    submit_grace: float = 0.0


class Path:
    """One transport path: whole calls, flows, and the first event of a stream."""

    def __init__(self, kind: str, cap: int = CAP) -> None:
        self.kind = kind
        self.cap = cap

    def _sync(self) -> Any:
        if self.kind == "pool":
            return SyncPool(max_response_bytes=self.cap)
        return HttpxSync(httpx.Client(), max_response_bytes=self.cap)

    def _async(self) -> Any:
        if self.kind == "pool":
            return AsyncPool(max_response_bytes=self.cap)
        return HttpxAsync(httpx.AsyncClient(), max_response_bytes=self.cap)

    def send(self, request: HttpRequest, *, mode: str) -> HttpResponse | TransportFailure:
        if mode == "sync":
            transport = self._sync()
            try:
                result: HttpResponse | TransportFailure = transport.send(request)
                return result
            finally:
                transport.close()

        async def go() -> HttpResponse | TransportFailure:
            transport = self._async()
            try:
                result: HttpResponse | TransportFailure = await transport.send(request)
                return result
            finally:
                await transport.aclose()

        return asyncio.run(go())

    def call(self, request: HttpRequest, *, mode: str) -> Any:
        """`flows.call` driven to its end: the typed error a user would see."""
        flow = call(Settings(), Deadline.after(30), request)
        if mode == "sync":
            transport = self._sync()
            try:
                return run_sync(flow, transport)
            finally:
                transport.close()

        async def go() -> Any:
            transport = self._async()
            try:
                return await run_async(flow, transport)
            finally:
                await transport.aclose()

        return asyncio.run(go())

    def first_event(self, request: HttpRequest, *, mode: str) -> Any:
        """Open `request` as a stream and wait for its first event (NextEvent without a timeout)."""
        if mode == "sync":
            transport = self._sync()
            performer = _SyncPerformer(transport)
            try:
                opened = performer.perform(OpenStream(request))
                return opened if isinstance(opened, TransportFailure) else performer.perform(NextEvent())
            finally:
                performer.close()
                transport.close()

        async def go() -> Any:
            transport = self._async()
            performer = _AsyncPerformer(transport)
            try:
                opened = await performer.perform(OpenStream(request))
                if isinstance(opened, TransportFailure):
                    return opened
                return await performer.perform(NextEvent())
            finally:
                await performer.close()
                await transport.aclose()

        return asyncio.run(go())


@pytest.fixture(params=["pool", "httpx"])
def path(request: pytest.FixtureRequest) -> Path:
    return Path(request.param)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve() -> Iterator[Callable[[Script], Server]]:
    servers: list[Server] = []

    def start(script: Script) -> Server:
        server = Server(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def get(server: Server, **options: Any) -> HttpRequest:
    return HttpRequest("GET", server.url, **options)


# -- the body cap ---------------------------------------------------------------------------------


def _gzip_bomb(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1024 * 1024)
    return b"".join(packer.compress(block) for _ in range(size // len(block))) + packer.flush()


BOMB = _gzip_bomb(128 * 1024 * 1024)  # 128 MiB of zeros in about 130 KiB


def gzip_bomb(sock: socket.socket, head: bytes = b"") -> None:
    sock.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(BOMB), BOMB)
    )


def test_a_gzip_bomb_stops_at_the_cap(
    serve: Callable[[Script], Server], path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(gzip_bomb)
    sizes: list[int] = []
    real_decompress = zlib.decompressobj

    class Watched:
        """zlib's inflater, noting how much each call hands out."""

        def __init__(self, *args: Any) -> None:
            self._inner = real_decompress(*args)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            out = self._inner.decompress(data, max_length)
            sizes.append(len(out))
            return out

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    monkeypatch.setattr(zlib, "decompressobj", Watched)
    with pytest.raises(ResponseTooLargeError, match=f"over {CAP} bytes"):
        path.call(get(server), mode=mode)
    assert sum(sizes) <= CAP + 1  # never inflated past the cap, so never a huge string
    assert server.accepted == 1  # not retried


def endless_chunks(sock: socket.socket, head: bytes = b"") -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    for _ in range(100_000):  # 6 GiB: the client must give up long before
        sock.sendall(chunk)


def test_an_endless_chunked_body_stops_at_the_cap(
    serve: Callable[[Script], Server], path: Path, mode: str
) -> None:
    server = serve(endless_chunks)
    reply = path.send(get(server), mode=mode)
    assert isinstance(reply, TransportFailure)
    assert reply.over_limit and reply.fatal, reply


# -- what h11 refuses -----------------------------------------------------------------------------


def conflicting_length_then_serve(sock: socket.socket, head: bytes = b"") -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 40\r\n\r\nhi")


def xchunkedx(sock: socket.socket, head: bytes = b"") -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunkedx\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


@pytest.mark.parametrize(
    "script", [conflicting_length_then_serve, xchunkedx], ids=["content-length-list", "xchunkedx"]
)
def test_a_malformed_response_is_refused_and_its_connection_not_reused(
    serve: Callable[[Script], Server], path: Path, script: Script
) -> None:
    server = serve(script)
    transport = path._sync()
    try:
        for _ in range(2):
            reply = transport.send(get(server))
            assert isinstance(reply, TransportFailure), reply
            assert reply.failure is Failure.AFTER_SEND and not reply.fatal
    finally:
        transport.close()
    assert server.accepted == 2  # each attempt on a fresh connection


# -- one deadline for the whole call --------------------------------------------------------------


def drip(sock: socket.socket, head: bytes = b"") -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(1000):
        time.sleep(0.25)
        sock.sendall(b"x")


def test_a_dripping_body_ends_at_the_deadline(
    serve: Callable[[Script], Server], path: Path, mode: str
) -> None:
    server = serve(drip)
    started = time.monotonic()
    reply = path.send(get(server, read_timeout=30.0, total_timeout=DEADLINE), mode=mode)
    assert time.monotonic() - started < DEADLINE + SLACK
    assert isinstance(reply, TransportFailure) and reply.timed_out, reply


def comments_only(sock: socket.socket, head: bytes = b"") -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(1000):
        sock.sendall(b"4\r\n: \n\n\r\n")
        time.sleep(0.1)


@pytest.mark.parametrize("bound", ["total_timeout", "read_timeout"])
def test_a_stream_of_keep_alive_comments_ends_at_the_deadline(
    serve: Callable[[Script], Server], path: Path, mode: str, bound: str
) -> None:
    """Comments are not events: neither the exchange's end nor the stream's wait for its next
    event (its read timeout) is stretched by them."""
    server = serve(comments_only)
    options = {"read_timeout": DEADLINE}
    if bound == "total_timeout":
        options = {"read_timeout": 30.0, "total_timeout": DEADLINE}
    started = time.monotonic()
    reply = path.first_event(get(server, **options), mode=mode)
    assert time.monotonic() - started < DEADLINE + SLACK
    assert isinstance(reply, TransportFailure) and reply.timed_out, reply


# -- event-stream lines ---------------------------------------------------------------------------


def long_line(sock: socket.socket, head: bytes = b"") -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\ndata: ")
    piece = b"a" * 65536
    for _ in range(256):  # 16 MiB without a line end
        sock.sendall(piece)


def test_an_unterminated_16_mb_event_line_is_refused(
    serve: Callable[[Script], Server], path: Path, mode: str
) -> None:
    server = serve(long_line)
    roomy = Path(path.kind, cap=64 * 1024 * 1024)  # the line cap, not the body cap, is what stops it
    reply = roomy.first_event(get(server, read_timeout=30.0), mode=mode)
    assert isinstance(reply, TransportFailure), reply
    assert reply.over_limit and "line over" in reply.message


def test_an_event_with_a_long_but_allowed_line_comes_through(
    serve: Callable[[Script], Server], path: Path
) -> None:
    line = b"data: " + b"b" * 500_000 + b"\n\n"

    def script(sock: socket.socket, head: bytes = b"") -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + line)
        sock.close()

    server = serve(script)
    event = path.first_event(get(server), mode="sync")
    assert isinstance(event, SseEvent) and len(event.data) == 500_000


# -- JSON -----------------------------------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


def deep_json(sock: socket.socket, head: bytes = b"") -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(DEEP), DEEP))


def test_json_nested_100k_deep_is_a_typed_error(
    serve: Callable[[Script], Server], path: Path, mode: str
) -> None:
    server = serve(deep_json)
    reply = path.send(get(server), mode=mode)
    assert isinstance(reply, HttpResponse)
    with pytest.raises(BadBody, match="nested too deeply"):
        reply.json()
    assert reply.json_or_text() == DEEP.decode()
    with pytest.raises(APIConnectionError, match="not valid JSON"):
        path.call(get(server), mode=mode)


# -- as a user sees it ----------------------------------------------------------------------------


def test_fal_backend_max_response_bytes_reaches_every_transport(serve: Callable[[Script], Server]) -> None:
    def big_answer(sock: socket.socket, head: bytes = b"") -> None:
        body = b'{"output": "' + b"a" * 300_000 + b'"}'
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    server = serve(big_answer)
    for client in (None, httpx.Client()):
        backend = FalBackend(
            base_url=server.url.rstrip("/"),
            api_key="k",
            mode="run",
            max_response_bytes=100_000,
            http_client=client,
        )
        with pytest.raises(ResponseTooLargeError, match="raise max_response_bytes="):
            backend.generate(VisionRequest(prompt="hi"))
        backend.close()
        if client is not None:
            client.close()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_max_response_bytes_must_be_a_positive_whole_number(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_response_bytes"):
        Transports(max_response_bytes=bad)


def test_a_status_stream_of_keep_alive_comments_does_not_outlast_a_fal_timeout(
    serve: Callable[[Script], Server],
) -> None:
    """The queue's status stream sends only comments: the call still ends by its timeout=
    (the stream is given up after `stream_idle_timeout` without an event; polling follows)."""

    def queue(sock: socket.socket, head: bytes = b"") -> None:
        line = head.split(b"\r\n", 1)[0]
        if line.startswith(b"GET") and b"/status/stream" in line:
            server.streams += 1
            comments_only(sock)
            return
        body = b'{"request_id": "r1", "status": "IN_QUEUE"}'
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    server = serve(queue)
    backend = FalBackend(base_url=server.url.rstrip("/"), api_key="k", timeout=3.0, stream_idle_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        backend.generate(VisionRequest(prompt="hi"))
    assert time.monotonic() - started < 3.0 + SLACK
    assert server.streams >= 1  # the stream was tried, and given up on: comments are not events
    backend.close()

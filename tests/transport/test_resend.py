"""A kept-alive connection the server closed before reading the next request: our pools and
the httpx adapter send that request once more on a new connection, even a POST, and only then.

The server is a script on real loopback sockets (the `Server` of the hostile-server
tests); it counts the requests that reached it, so each case shows whether a request
went out again and on how many connections.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Any

import httpx
import pytest

from llava_bridge.backends._transport.async_pool import AsyncPool
from llava_bridge.backends._transport.effects import HttpRequest, HttpResponse, TransportFailure
from llava_bridge.backends._transport.httpx_adapter import HttpxAsync, HttpxSync
from llava_bridge.backends._transport.sync_pool import SyncPool
from llava_bridge.retry import Failure, Phase

from .test_hostile_servers import Server

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class Script:
    """Answers each request with `OK`, except that request number `drop_at` on a
    connection gets `reply` (nothing, by default) and then the connection is closed."""

    def __init__(self, drop_at: int, reply: bytes = b"", *, hang: bool = False, reset: bool = False) -> None:
        self.drop_at = drop_at
        self.reply = reply
        self.hang = hang
        self.reset = reset
        """Close with a reset (SO_LINGER 0) rather than an orderly end."""
        self.requests = 0
        self.released = threading.Event()
        """Set when the test ends: a hanging answer stops waiting."""
        self._per_connection = threading.local()

    def __call__(self, sock: socket.socket, head: bytes) -> None:
        _read_body(sock, head)
        self.requests += 1
        number = getattr(self._per_connection, "number", 0) + 1
        self._per_connection.number = number
        if number != self.drop_at:
            sock.sendall(OK)
            return
        if self.hang:
            self.released.wait(30)
        if self.reply:
            sock.sendall(self.reply)
        if self.reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def _read_body(sock: socket.socket, data: bytes) -> None:
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)


def post(url: str, read_timeout: float = 10.0) -> HttpRequest:
    return HttpRequest(
        "POST",
        url,
        json_body={"n": 1},
        read_timeout=read_timeout,
        label="chat completion",
        phase=Phase.SUBMIT,
    )


MODES = ["sync-pool", "async-pool", "sync-httpx", "async-httpx"]


def two_posts(url: str, mode: str, read_timeout: float = 10.0) -> list[HttpResponse | TransportFailure]:
    """Two POSTs one after the other through one transport (`mode`)."""
    if mode.startswith("sync"):
        transport = SyncPool() if mode == "sync-pool" else HttpxSync(httpx.Client())
        try:
            return [transport.send(post(url, read_timeout)) for _ in range(2)]
        finally:
            transport.close()

    async def go() -> list[HttpResponse | TransportFailure]:
        transport = AsyncPool() if mode == "async-pool" else HttpxAsync(httpx.AsyncClient())
        try:
            return [await transport.send(post(url, read_timeout)) for _ in range(2)]
        finally:
            await transport.aclose()

    return asyncio.run(go())


@pytest.fixture
def serve() -> Any:
    started: list[tuple[Server, Script]] = []

    def start(script: Script) -> Server:
        server = Server(script)
        started.append((server, script))
        return server

    yield start
    for server, script in started:
        script.released.set()
        server.stop()


@pytest.mark.parametrize("close", ["end", "reset"])
@pytest.mark.parametrize("mode", MODES)
def test_a_post_on_a_connection_closed_while_idle_is_sent_again_on_a_new_one(
    serve: Any, mode: str, close: str
) -> None:
    script = Script(drop_at=2, reset=close == "reset")
    server = serve(script)
    first, second = two_posts(server.url, mode)
    assert isinstance(first, HttpResponse) and first.body == b"ok"
    if mode.endswith("httpx") and close == "end":
        # httpx cannot tell an end before any answer from one after part of it: not re-sent
        assert isinstance(second, TransportFailure) and second.failure is Failure.AFTER_SEND
        assert (server.accepted, script.requests) == (1, 2)
        return
    assert isinstance(second, HttpResponse) and second.body == b"ok"
    assert (server.accepted, script.requests) == (2, 3)


@pytest.mark.parametrize("mode", MODES)
def test_a_new_connection_closed_unanswered_is_not_sent_again(serve: Any, mode: str) -> None:
    script = Script(drop_at=1)
    server = serve(script)
    first, _ = two_posts(server.url, mode)
    assert isinstance(first, TransportFailure) and first.failure is Failure.AFTER_SEND
    assert script.requests == 2  # one per call: neither was re-sent


@pytest.mark.parametrize("mode", MODES)
def test_a_reused_connection_closed_after_part_of_an_answer_is_not_sent_again(serve: Any, mode: str) -> None:
    script = Script(drop_at=2, reply=b"HTTP/1.1 200 OK\r\nContent-")
    server = serve(script)
    first, second = two_posts(server.url, mode)
    assert isinstance(first, HttpResponse)
    assert isinstance(second, TransportFailure) and second.failure is Failure.AFTER_SEND
    assert (server.accepted, script.requests) == (1, 2)


@pytest.mark.parametrize("mode", MODES)
def test_a_reused_connection_that_times_out_is_not_sent_again(serve: Any, mode: str) -> None:
    script = Script(drop_at=2, hang=True)
    server = serve(script)
    first, second = two_posts(server.url, mode, read_timeout=0.5)
    assert isinstance(first, HttpResponse)
    assert isinstance(second, TransportFailure) and second.timed_out
    assert (server.accepted, script.requests) == (1, 2)

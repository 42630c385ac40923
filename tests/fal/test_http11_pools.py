"""`SyncPool` and `AsyncPool` against a scripted server on real loopback sockets.

Every test runs for the sync pool, the async pool on asyncio's own loop, and on uvloop.
The server gives each accepted connection the next of its scripts (the last one repeats)
and records what happened on it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from llava_bridge.backends._transport.async_pool import AsyncPool
from llava_bridge.backends._transport.effects import HttpRequest, HttpResponse, TransportFailure
from llava_bridge.backends._transport.sync_pool import SyncPool
from llava_bridge.retry import Failure

try:
    import uvloop
except ImportError:  # pragma: no cover - a dev dependency where it installs
    uvloop = None

# -- the scripted server --------------------------------------------------------------------------


class Peer:
    """The server's side of one accepted connection."""

    def __init__(self, server: ScriptedServer, sock: socket.socket, index: int) -> None:
        self.server, self.sock, self.index = server, sock, index
        self.requests: list[bytes] = []
        self.client_closed = False
        """The client ended the connection (EOF or reset) while the script waited for a request."""
        self.server_closed = False
        self._buffer = b""

    def read_request(self) -> bytes | None:
        """The next whole request (head and Content-Length body); None when the client closed."""
        while b"\r\n\r\n" not in self._buffer:
            if not self._recv():
                return None
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            if not self._recv():
                return None
            rest = self._buffer.partition(b"\r\n\r\n")[2]
        request = head + b"\r\n\r\n" + rest[:length]
        self._buffer = rest[length:]
        self.requests.append(request)
        return request

    def _recv(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise
        except OSError:
            data = b""
        if not data:
            self.client_closed = True
            return False
        self._buffer += data
        return True

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.server_closed = True
        self.sock.close()

    def hold(self, seconds: float = 5.0) -> None:
        """Answer nothing more until the test ends (or `seconds` pass); notice the client closing."""
        ends = time.monotonic() + seconds
        self.sock.settimeout(0.01)
        while not self.server.stopping.is_set() and time.monotonic() < ends:
            try:
                if not self._recv():
                    return
            except TimeoutError:
                continue


Script = Callable[[Peer], None]


class ScriptedServer:
    """Answers each accepted connection with the next script; counts connections."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = scripts
        self.stopping = threading.Event()
        self.peers: list[Peer] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def accepted(self) -> int:
        return len(self.peers)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            peer = Peer(self, sock, len(self.peers))
            self.peers.append(peer)
            script = self.scripts[min(peer.index, len(self.scripts) - 1)]
            thread = threading.Thread(target=self._run, args=(script, peer), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, script: Script, peer: Peer) -> None:
        try:
            script(peer)
        except OSError:
            pass

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        ends = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > ends:
                return False
            time.sleep(0.005)
        return True

    def stop(self) -> None:
        self.stopping.set()
        self._listener.close()
        for peer in self.peers:
            try:
                peer.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            peer.sock.close()
        for thread in self._threads:
            thread.join(2.0)
        assert not any(thread.is_alive() for thread in self._threads), "a server thread did not stop"


def ok(body: bytes = b"ok", *headers: bytes) -> bytes:
    extra = b"".join(header + b"\r\n" for header in headers)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def serve(peer: Peer) -> None:
    """Keep-alive: answer every request with its connection and request number."""
    while peer.read_request() is not None:
        peer.send(ok(b"c%d r%d" % (peer.index, len(peer.requests) - 1)))


def answer_once_then_close(peer: Peer) -> None:
    if peer.read_request() is not None:
        peer.send(ok(b"c%d r0" % peer.index))
        peer.close()


def answer_with_connection_close_but_stay(peer: Peer) -> None:
    """Says `Connection: close` yet keeps the connection open: a client that reused it would be seen."""
    while peer.read_request() is not None:
        peer.send(ok(b"c%d r%d" % (peer.index, len(peer.requests) - 1), b"Connection: close"))


def close_without_answer(peer: Peer) -> None:
    peer.read_request()
    peer.close()


def never_answer(peer: Peer) -> None:
    peer.read_request()
    peer.hold()


def stream_then_hold(peer: Peer) -> None:
    """A chunked 200 whose first chunk comes at once and whose end never does."""
    if peer.read_request() is not None:
        peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
        peer.hold()


# -- one face for both pools ----------------------------------------------------------------------


class SyncClient:
    def __init__(self, **options: Any) -> None:
        self.pool = SyncPool(**options)

    def send(self, request: HttpRequest) -> HttpResponse | TransportFailure:
        return self.pool.send(request)

    def open(self, request: HttpRequest) -> Any:
        return self.pool.open(request)

    def read(self, body: Any) -> bytes:
        return body.read()

    def close_body(self, body: Any, drain: float = 0.0) -> None:
        body.close(drain)

    def send_meanwhile(
        self, request: HttpRequest, delay: float, action: Callable[[], None]
    ) -> HttpResponse | TransportFailure:
        """Send, while another thread runs `action` after `delay` seconds."""
        timer = threading.Timer(delay, action)
        timer.start()
        try:
            return self.pool.send(request)
        finally:
            timer.join()

    def close_body_later(self, body: Any) -> Callable[[], None]:
        return lambda: body.close()

    def send_many(self, requests: list[HttpRequest]) -> list[HttpResponse | TransportFailure]:
        results: list[Any] = [None] * len(requests)

        def one(i: int) -> None:
            results[i] = self.pool.send(requests[i])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        return results

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        self.pool.close()

    def shut(self) -> None:
        self.pool.close()


class AsyncClient:
    """Runs each call to completion on a loop of its own (the pool belongs to that loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, **options: Any) -> None:
        self.loop = loop
        self.pool = AsyncPool(**options)

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, 5))

    def send(self, request: HttpRequest) -> HttpResponse | TransportFailure:
        return self._run(self.pool.send(request))

    def open(self, request: HttpRequest) -> Any:
        return self._run(self.pool.open(request))

    def read(self, body: Any) -> bytes:
        return self._run(body.read())

    def close_body(self, body: Any, drain: float = 0.0) -> None:
        self._run(body.close(drain))

    def send_meanwhile(
        self, request: HttpRequest, delay: float, action: Callable[[], Any]
    ) -> HttpResponse | TransportFailure:
        """Send, while another task runs `action` after `delay` seconds."""

        async def later() -> None:
            await asyncio.sleep(delay)
            result = action()
            if asyncio.iscoroutine(result):
                await result

        async def both() -> HttpResponse | TransportFailure:
            task = asyncio.create_task(later())
            try:
                return await self.pool.send(request)
            finally:
                await task

        return self._run(both())

    def close_body_later(self, body: Any) -> Callable[[], Any]:
        return lambda: body.close()

    def send_many(self, requests: list[HttpRequest]) -> list[HttpResponse | TransportFailure]:
        async def all_of() -> list[HttpResponse | TransportFailure]:
            return list(await asyncio.gather(*(self.pool.send(r) for r in requests)))

        return self._run(all_of())

    def sleep(self, seconds: float) -> None:
        """Let the loop run (and see what arrived on its connections) for a while."""
        self._run(asyncio.sleep(seconds))

    def close(self) -> None:
        self.pool.close()

    def shut(self) -> None:
        self.pool.close()
        self.loop.run_until_complete(asyncio.sleep(0.01))  # let closed transports finish
        self.loop.close()


Client = SyncClient | AsyncClient
KINDS = [
    "sync",
    "asyncio",
    pytest.param("uvloop", marks=pytest.mark.skipif(uvloop is None, reason="no uvloop")),
]


@pytest.fixture(params=KINDS)
def make_client(request: pytest.FixtureRequest) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(**options: Any) -> Client:
        client: Client
        if request.param == "sync":
            client = SyncClient(**options)
        else:
            loop = asyncio.new_event_loop() if request.param == "asyncio" else uvloop.new_event_loop()
            client = AsyncClient(loop, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.shut()


@pytest.fixture
def make_server() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def make(*scripts: Script) -> ScriptedServer:
        server = ScriptedServer(*scripts)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def get(url: str, **options: Any) -> HttpRequest:
    return HttpRequest("GET", url, **{"connect_timeout": 10.0, "read_timeout": 10.0, **options})


def body_of(result: HttpResponse | TransportFailure) -> bytes:
    assert isinstance(result, HttpResponse), result
    assert result.status_code == 200
    return result.body


def failure_of(result: Any) -> TransportFailure:
    assert isinstance(result, TransportFailure), result
    return result


# -- tests ----------------------------------------------------------------------------------------


def test_keepalive_reuses_one_connection(make_client: Callable[..., Client], make_server: Any) -> None:
    server = make_server(serve)
    client = make_client()

    assert body_of(client.send(get(server.url + "/a"))) == b"c0 r0"
    assert body_of(client.send(get(server.url + "/b"))) == b"c0 r1"
    assert body_of(client.send(get(server.url + "/c"))) == b"c0 r2"
    assert server.accepted == 1
    assert [r.split(b" ")[1] for r in server.peers[0].requests] == [b"/a", b"/b", b"/c"]


def test_request_bytes_on_the_wire(make_client: Callable[..., Client], make_server: Any) -> None:
    server = make_server(serve)
    client = make_client()

    request = HttpRequest(
        "POST",
        server.url + "/submit path",
        headers={"Authorization": "Key k"},
        params={"q": "a b"},
        json_body={"prompt": "café"},
    )
    assert body_of(client.send(request)) == b"c0 r0"
    body = '{"prompt":"café"}'.encode()
    assert server.peers[0].requests == [
        b"POST /submit%%20path?q=a+b HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Key k\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (server.port, len(body), body)
    ]


def test_a_connection_the_server_closed_while_idle_is_replaced(
    make_client: Callable[..., Client], make_server: Any
) -> None:
    server = make_server(answer_once_then_close, serve)
    client = make_client()

    assert body_of(client.send(get(server.url))) == b"c0 r0"
    assert server.wait_for(lambda: server.peers[0].server_closed)
    client.sleep(0.05)  # the FIN reaches the client's socket (and the async loop sees it)
    assert body_of(client.send(get(server.url))) == b"c1 r0"
    assert server.accepted == 2
    assert len(server.peers[0].requests) == 1


def test_stray_bytes_on_an_idle_connection_make_it_unusable(
    make_client: Callable[..., Client], make_server: Any
) -> None:
    def answer_then_babble(peer: Peer) -> None:
        peer.read_request()
        peer.send(ok(b"c0 r0"))
        time.sleep(0.02)
        peer.send(b"HTTP/1.1 200 OK\r\n")  # nobody asked
        babbled.set()
        serve(peer)

    babbled = threading.Event()
    server = make_server(answer_then_babble, serve)
    client = make_client()

    assert body_of(client.send(get(server.url))) == b"c0 r0"
    assert babbled.wait(10)
    client.sleep(0.1)
    assert body_of(client.send(get(server.url))) == b"c1 r0"
    assert server.wait_for(lambda: server.peers[0].client_closed)


def test_keepalive_expiry(make_client: Callable[..., Client], make_server: Any) -> None:
    now = [1000.0]
    server = make_server(serve)
    client = make_client(keepalive_expiry=5.0, clock=lambda: now[0])

    assert body_of(client.send(get(server.url))) == b"c0 r0"
    now[0] += 4.9
    assert body_of(client.send(get(server.url))) == b"c0 r1"
    now[0] += 5.1
    assert body_of(client.send(get(server.url))) == b"c1 r0"
    assert server.accepted == 2
    client.sleep(0.01)
    assert server.wait_for(lambda: server.peers[0].client_closed), "the expired connection was not closed"


def test_connection_close_response_is_not_reused(
    make_client: Callable[..., Client], make_server: Any
) -> None:
    server = make_server(answer_with_connection_close_but_stay)
    client = make_client()

    assert body_of(client.send(get(server.url))) == b"c0 r0"
    assert body_of(client.send(get(server.url))) == b"c1 r0"
    assert server.accepted == 2
    client.sleep(0.01)
    assert server.wait_for(lambda: server.peers[0].client_closed)


def test_close_delimited_body(make_client: Callable[..., Client], make_server: Any) -> None:
    def old_style(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
        time.sleep(0.02)
        peer.send(b"it")
        peer.close()

    server = make_server(old_style, serve)
    client = make_client()

    assert body_of(client.send(get(server.url))) == b"all of it"
    assert body_of(client.send(get(server.url))) == b"c1 r0"


def test_connect_refused_is_not_sent(make_client: Callable[..., Client]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: refused
        client = make_client()
        started = time.monotonic()
        failure = failure_of(client.send(get(f"http://127.0.0.1:{port}/")))
    assert time.monotonic() - started < 5.0  # refused at once, not the 10 s connect timeout
    assert failure.failure is Failure.NOT_SENT
    assert not failure.timed_out and not failure.fatal
    assert "ConnectionRefusedError" in failure.message


def test_closed_without_an_answer_is_after_send(make_client: Callable[..., Client], make_server: Any) -> None:
    server = make_server(close_without_answer)
    client = make_client()

    failure = failure_of(client.send(get(server.url)))
    assert failure.failure is Failure.AFTER_SEND
    assert not failure.timed_out and not failure.fatal
    assert len(server.peers[0].requests) == 1


def test_closed_in_the_middle_of_the_body_is_after_send(
    make_client: Callable[..., Client], make_server: Any
) -> None:
    def half(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        peer.close()

    server = make_server(half, serve)
    client = make_client()

    failure = failure_of(client.send(get(server.url)))
    assert failure.failure is Failure.AFTER_SEND and not failure.timed_out
    assert body_of(client.send(get(server.url))) == b"c1 r0"


def test_garbage_response_is_after_send(make_client: Callable[..., Client], make_server: Any) -> None:
    def garbage(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"SSH-2.0-OpenSSH\r\n\r\n")
        peer.hold()

    server = make_server(garbage)
    client = make_client()

    failure = failure_of(client.send(get(server.url)))
    assert failure.failure is Failure.AFTER_SEND and not failure.timed_out
    assert "ProtocolError" in failure.message


def test_read_timeout_is_after_send_and_timed_out(
    make_client: Callable[..., Client], make_server: Any
) -> None:
    server = make_server(never_answer)
    client = make_client()

    started = time.monotonic()
    failure = failure_of(client.send(get(server.url, read_timeout=0.2)))
    elapsed = time.monotonic() - started
    assert failure.failure is Failure.AFTER_SEND
    assert failure.timed_out and not failure.fatal
    assert 0.15 <= elapsed < 5.0  # the server never answers: only the timeout ends the wait
    assert server.wait_for(lambda: len(server.peers[0].requests) == 1)


def test_pool_full_times_out_not_sent(make_client: Callable[..., Client], make_server: Any) -> None:
    server = make_server(stream_then_hold, serve)
    client = make_client(max_connections=1)

    response, body = client.open(get(server.url))
    assert response.status_code == 200 and body is not None
    started = time.monotonic()
    failure = failure_of(client.send(get(server.url, connect_timeout=0.2)))
    elapsed = time.monotonic() - started
    assert failure.failure is Failure.NOT_SENT
    assert failure.timed_out and not failure.fatal
    assert 0.15 <= elapsed < 5.0  # the pool stays full: only the timeout ends the wait
    assert server.accepted == 1
    client.close_body(body)


def test_pool_full_waits_for_a_body_closed_meanwhile(
    make_client: Callable[..., Client], make_server: Any
) -> None:
    server = make_server(stream_then_hold, serve)
    client = make_client(max_connections=1)

    response, body = client.open(get(server.url))
    assert response.status_code == 200 and body is not None
    started = time.monotonic()
    result = client.send_meanwhile(get(server.url, connect_timeout=30.0), 0.1, client.close_body_later(body))
    elapsed = time.monotonic() - started
    assert body_of(result) == b"c1 r0"
    assert 0.08 <= elapsed < 10.0  # woken by the close, not by the 30 s timeout
    assert server.accepted == 2


def test_pool_full_waiter_is_woken_by_pool_close(
    make_client: Callable[..., Client], make_server: Any
) -> None:
    server = make_server(stream_then_hold, serve)
    client = make_client(max_connections=1)

    response, body = client.open(get(server.url))
    assert response.status_code == 200 and body is not None
    started = time.monotonic()
    failure = failure_of(client.send_meanwhile(get(server.url, connect_timeout=30.0), 0.1, client.close))
    assert time.monotonic() - started < 10.0  # woken by the close, not by the 30 s timeout
    assert failure.failure is Failure.NOT_SENT and not failure.timed_out
    client.close_body(body)
    assert server.wait_for(lambda: server.peers[0].client_closed)


def test_pool_limit_closes_an_idle_connection_of_another_origin(
    make_client: Callable[..., Client], make_server: Any
) -> None:
    first, second = make_server(serve), make_server(serve)
    client = make_client(max_connections=1)

    assert body_of(client.send(get(first.url))) == b"c0 r0"
    assert body_of(client.send(get(second.url))) == b"c0 r0"
    client.sleep(0.01)
    assert first.wait_for(lambda: first.peers[0].client_closed)
    assert body_of(client.send(get(second.url))) == b"c0 r1"
    assert (first.accepted, second.accepted) == (1, 1)


def test_concurrent_requests_share_at_most_max_connections(
    make_client: Callable[..., Client], make_server: Any
) -> None:
    def slow(peer: Peer) -> None:
        while peer.read_request() is not None:
            time.sleep(0.02)
            peer.send(ok(b"c%d" % peer.index))

    server = make_server(slow)
    client = make_client(max_connections=2)

    results = client.send_many([get(server.url, connect_timeout=10.0) for _ in range(8)])
    assert len(results) == 8
    assert {body_of(r) for r in results} == {b"c0", b"c1"}
    assert server.accepted == 2


def test_open_streams_a_chunked_body_piece_by_piece(
    make_client: Callable[..., Client], make_server: Any
) -> None:
    go = threading.Event()

    def stream(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n")
        peer.send(b"3\r\none\r\n")
        go.wait(2)
        peer.send(b"3;ext=1\r\ntwo\r\n")
        go.clear()
        go.wait(2)
        peer.send(b"0\r\n\r\n")
        serve(peer)

    server = make_server(stream)
    client = make_client()

    response, body = client.open(get(server.url))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.body == b""
    assert client.read(body) == b"one"  # while the server holds the rest back
    go.set()
    assert client.read(body) == b"two"
    server.wait_for(lambda: not go.is_set())
    go.set()
    assert client.read(body) == b""
    assert client.read(body) == b""
    assert body_of(client.send(get(server.url))) == b"c0 r1"
    assert server.accepted == 1


def test_open_reads_an_error_body_whole(make_client: Callable[..., Client], make_server: Any) -> None:
    def error(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: chunked\r\n\r\n")
        peer.send(b'5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n')
        serve(peer)

    server = make_server(error)
    client = make_client()

    response, body = client.open(get(server.url))
    assert body is None
    assert (response.status_code, response.body) == (422, b'{"a":1}')
    assert body_of(client.send(get(server.url))) == b"c0 r1"


def test_close_with_drain_reuses_the_connection_when_the_end_comes_in_time(
    make_client: Callable[..., Client], make_server: Any
) -> None:
    def stream_then_end(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
        time.sleep(0.1)
        peer.send(b"4\r\nmore\r\n0\r\n\r\n")
        serve(peer)

    server = make_server(stream_then_end)
    client = make_client()

    _, body = client.open(get(server.url))
    assert client.read(body) == b"a"
    started = time.monotonic()
    client.close_body(body, drain=30.0)
    assert time.monotonic() - started < 10.0  # returned when the end came, not after the 30 s drain
    assert body_of(client.send(get(server.url))) == b"c0 r1"
    assert server.accepted == 1


def test_close_with_drain_closes_the_connection_when_the_end_is_late(
    make_client: Callable[..., Client], make_server: Any
) -> None:
    server = make_server(stream_then_hold, serve)
    client = make_client()

    _, body = client.open(get(server.url))
    assert client.read(body) == b"a"
    started = time.monotonic()
    client.close_body(body, drain=0.15)
    assert 0.1 <= time.monotonic() - started < 5.0  # the end never comes: only the drain limit ends it
    client.sleep(0.01)
    assert server.wait_for(lambda: server.peers[0].client_closed)
    assert body_of(client.send(get(server.url))) == b"c1 r0"


def test_close_without_drain_closes_the_connection(
    make_client: Callable[..., Client], make_server: Any
) -> None:
    server = make_server(stream_then_hold, serve)
    client = make_client()

    _, body = client.open(get(server.url))
    started = time.monotonic()
    client.close_body(body)
    client.close_body(body)  # twice is harmless
    assert time.monotonic() - started < 10.0  # no drain: the held stream's end is not awaited
    client.sleep(0.01)
    assert server.wait_for(lambda: server.peers[0].client_closed)
    assert client.read(body) == b""
    assert body_of(client.send(get(server.url))) == b"c1 r0"


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("ftp://127.0.0.1:{port}/", {}),
        ("http:///nohost", {}),
        ("http://127.0.0.1:{port}/", {"X-A": "1\r\nX-Injected: 1"}),
        ("http://127.0.0.1:{port}/", {"Bad Name": "1"}),
    ],
    ids=["scheme", "no-host", "header-crlf", "header-name"],
)
def test_unusable_request_is_fatal_without_connecting(
    make_client: Callable[..., Client], make_server: Any, url: str, headers: dict[str, str]
) -> None:
    server = make_server(serve)
    client = make_client()

    failure = failure_of(client.send(get(url.format(port=server.port), headers=headers)))
    assert failure.fatal and failure.failure is Failure.NOT_SENT and not failure.timed_out
    failure = failure_of(client.open(get(url.format(port=server.port), headers=headers)))
    assert failure.fatal
    time.sleep(0.05)
    assert server.accepted == 0


def test_closed_pool_fails_at_once(make_client: Callable[..., Client], make_server: Any) -> None:
    server = make_server(serve)
    client = make_client()

    assert body_of(client.send(get(server.url))) == b"c0 r0"
    client.close()
    client.sleep(0.01)
    assert server.wait_for(lambda: server.peers[0].client_closed), "the idle connection stayed open"
    started = time.monotonic()
    failure = failure_of(client.send(get(server.url)))
    assert time.monotonic() - started < 5.0  # at once, not after the 10 s connect timeout
    assert failure.failure is Failure.NOT_SENT and not failure.fatal
    assert server.accepted == 1


def test_body_in_use_when_the_pool_closes_is_closed_when_done(
    make_client: Callable[..., Client], make_server: Any
) -> None:
    def stream(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        time.sleep(0.05)
        peer.send(b"cd")
        serve(peer)

    server = make_server(stream)
    client = make_client()

    _, body = client.open(get(server.url))
    client.close()
    pieces = []
    while piece := client.read(body):
        pieces.append(piece)
    assert b"".join(pieces) == b"abcd"
    client.sleep(0.01)
    assert server.wait_for(lambda: server.peers[0].client_closed)

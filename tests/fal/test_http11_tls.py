"""HTTPS through our own pools: a real TLS server on 127.0.0.1 with a throwaway CA (trustme)."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from llava_bridge.backends._transport import pool_base as _h1_io
from llava_bridge.backends._transport.async_pool import AsyncPool
from llava_bridge.backends._transport.effects import HttpRequest, HttpResponse, TransportFailure
from llava_bridge.backends._transport.sync_pool import SyncPool
from llava_bridge.retry import Failure


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:
        body = f'{{"path": "{self.path}", "tls": true}}'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.context = context
        self.accepted = 0

    def get_request(self) -> tuple[ssl.SSLSocket, object]:
        sock, address = super().get_request()
        self.accepted += 1
        return self.context.wrap_socket(sock, server_side=True), address

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server(ca: trustme.CA) -> Iterator[_TlsServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    httpd = _TlsServer(context)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def _get(url: str) -> HttpRequest:
    return HttpRequest("GET", url, connect_timeout=5.0, read_timeout=5.0)


def _ok(reply: HttpResponse | TransportFailure) -> HttpResponse:
    assert isinstance(reply, HttpResponse), reply
    return reply


def test_sync_pool_speaks_https_and_keeps_the_connection(
    server: _TlsServer, trusting: ssl.SSLContext
) -> None:
    pool = SyncPool(tls=trusting)
    try:
        first = _ok(pool.send(_get(server.url + "/a")))
        second = _ok(pool.send(_get(server.url + "/b?x=1")))
    finally:
        pool.close()

    assert first.json() == {"path": "/a", "tls": True}
    assert second.json() == {"path": "/b?x=1", "tls": True}
    assert server.accepted == 1


async def test_async_pool_speaks_https_and_keeps_the_connection(
    server: _TlsServer, trusting: ssl.SSLContext
) -> None:
    pool = AsyncPool(tls=trusting)
    try:
        replies = [await pool.send(_get(f"{server.url}/{n}")) for n in range(3)]
        together = await asyncio.gather(*(pool.send(_get(f"{server.url}/g{n}")) for n in range(4)))
    finally:
        await pool.aclose()

    assert [_ok(r).json()["path"] for r in replies] == ["/0", "/1", "/2"]
    assert sorted(_ok(r).json()["path"] for r in together) == ["/g0", "/g1", "/g2", "/g3"]
    assert server.accepted == 4  # one for the three in a row, three more for four at once


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_untrusted_certificate_is_refused_before_anything_is_sent(
    server: _TlsServer, mode: str
) -> None:
    untrusting = ssl.create_default_context()  # the system's CAs: not our throwaway one
    if mode == "sync":
        reply = SyncPool(tls=untrusting).send(_get(server.url))
    else:
        reply = await AsyncPool(tls=untrusting).send(_get(server.url))

    assert isinstance(reply, TransportFailure)
    assert reply.failure is Failure.NOT_SENT and not reply.fatal
    assert "certificate" in reply.message


def test_ssl_cert_file_is_honoured_by_the_default_context(
    server: _TlsServer, ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setattr(_h1_io, "_tls", None)  # the process-wide context is made anew from the variable

    pool = SyncPool()
    try:
        assert _ok(pool.send(_get(server.url + "/env"))).json()["path"] == "/env"
    finally:
        pool.close()

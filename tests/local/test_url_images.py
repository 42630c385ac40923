"""`fetch_urls=True` on TransformersBackend and OpenAICompatBackend: URL images fetched
through the SSRF guard from a real HTTP server on 127.0.0.1 (loopback allowed explicitly),
and refused before any connection when it is not allowed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llava_bridge import ConfigurationError, ImageInput, InvalidImageError, VisionRequest
from llava_bridge.backends.image_urls.fetcher import ImageFetcher
from llava_bridge.backends.image_urls.guard import AddressGuard
from llava_bridge.backends.openai_compat.backend import OpenAICompatBackend

from .conftest import colour_image
from .openai_test_server import OpenAITestServer

PICTURE = colour_image(5, size=(48, 36))
LATE_SECONDS = 2.0


class ImageHost:
    """Serves `/cat.png`, `/moved` (a redirect to it), `/huge` (a 100 kB body), `/slow` (a
    body that never ends) and `/late.png` (the picture after 2 s); counts every request."""

    def __init__(self, png: bytes) -> None:
        self.png = png
        self.requests: list[str] = []
        self.release = threading.Event()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.requests.append(self.path)
                if self.path == "/moved":
                    self._send(302, b"", location="/cat.png")
                elif self.path == "/cat.png":
                    self._send(200, host.png)
                elif self.path == "/late.png":
                    host.release.wait(LATE_SECONDS)
                    self._send(200, host.png)
                elif self.path == "/huge":
                    self._send(200, b"\x89PNG" + bytes(100_000))
                elif self.path == "/slow":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000000")
                    self.end_headers()
                    while not host.release.wait(0.05):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                else:
                    self._send(404, b"no")

            def _send(self, status: int, body: bytes, location: str | None = None) -> None:
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


@pytest.fixture
def host() -> Iterator[ImageHost]:
    assert PICTURE.data is not None
    running = ImageHost(PICTURE.data)
    yield running
    running.stop()


@pytest.fixture
def openai_server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer() as running:
        yield running


def ask(url: str) -> VisionRequest:
    return VisionRequest(prompt="w1 w2", image=ImageInput.from_url(url), max_new_tokens=6)


def test_transformers_backend_fetches_a_url_like_the_bytes(tiny_dir: Path, host: ImageHost) -> None:
    from llava_bridge.backends.local.backend import TransformersBackend

    with TransformersBackend(
        str(tiny_dir), local_files_only=True, batch_wait_ms=0, fetch_urls=True, allow_private_urls=True
    ) as backend:
        fetched = backend.generate(ask(host.url("/moved")))
        direct = backend.generate(VisionRequest(prompt="w1 w2", image=PICTURE, max_new_tokens=6))
        streamed = asyncio.run(_astream_text(backend, ask(host.url("/cat.png"))))
    assert fetched.text == direct.text == streamed
    assert fetched.usage == direct.usage
    assert host.requests == ["/moved", "/cat.png", "/cat.png"]


async def _astream_text(backend: Any, request: VisionRequest) -> str:
    return "".join([chunk.delta async for chunk in backend.astream(request)])


def test_openai_compat_sends_the_fetched_image_as_a_data_uri(
    openai_server: OpenAITestServer, host: ImageHost
) -> None:
    with OpenAICompatBackend(openai_server.base_url, fetch_urls=True, allow_private_urls=True) as backend:
        backend.generate(ask(host.url("/cat.png")))
        asyncio.run(backend.agenerate(ask(host.url("/moved"))))
    with OpenAICompatBackend(openai_server.base_url) as backend:  # the default: the server fetches
        backend.generate(ask(host.url("/cat.png")))
    sent = [payload["messages"][-1]["content"][0]["image_url"]["url"] for payload in openai_server.requests]
    assert sent[0] == sent[1] == PICTURE.resized(None).to_data_uri()
    assert sent[2] == host.url("/cat.png")
    assert host.requests == ["/cat.png", "/moved", "/cat.png"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/cat.png", "http://10.255.255.1/cat.png"])
def test_private_and_loopback_urls_are_refused_before_connecting(
    openai_server: OpenAITestServer, host: ImageHost, url: str
) -> None:
    url = url.format(port=host.url("").rsplit(":", 1)[1])
    with OpenAICompatBackend(openai_server.base_url, fetch_urls=True) as backend:
        with pytest.raises(InvalidImageError, match="allow_private_urls=True"):
            backend.generate(ask(url))
        with pytest.raises(InvalidImageError, match="non-public"):
            asyncio.run(backend.agenerate(ask(url)))
    assert host.requests == [] and openai_server.requests == []


def test_transformers_backend_refuses_loopback_without_the_opt_in(tiny_dir: Path, host: ImageHost) -> None:
    from llava_bridge.backends.local.backend import TransformersBackend

    backend = TransformersBackend(str(tiny_dir), local_files_only=True, fetch_urls=True)
    with backend, pytest.raises(InvalidImageError, match="allow_private_urls=True"):
        backend.generate(ask(host.url("/cat.png")))
    assert host.requests == []


@pytest.mark.parametrize(
    ("path", "limits", "message"),
    [
        ("/huge", {"max_bytes": 10_000}, "10,000-byte limit"),
        ("/cat.png", {"max_pixels": 100}, "100-pixel limit"),
        ("/slow", {"timeout": 1.0}, "took over 1 s"),
        ("/missing", {}, "HTTP 404"),
    ],
)
def test_the_fetchers_limits(host: ImageHost, path: str, limits: dict[str, Any], message: str) -> None:
    fetcher = ImageFetcher(AddressGuard(allow_private=True), **limits)
    try:
        with pytest.raises(InvalidImageError, match=message):
            fetcher.load_sync(host.url(path))
    finally:
        fetcher.close()
    assert host.requests == [path]


def test_a_fetcher_of_your_own_and_bad_options(openai_server: OpenAITestServer, host: ImageHost) -> None:
    fetcher = ImageFetcher(AddressGuard(allow_private=True), max_bytes=10_000)
    backend = OpenAICompatBackend(openai_server.base_url, fetch_urls=fetcher)
    with backend, pytest.raises(InvalidImageError, match="byte limit"):
        backend.generate(ask(host.url("/huge")))
    assert fetcher.load_sync(host.url("/cat.png")).data == PICTURE.data  # left open for its owner
    fetcher.close()
    for options in (
        {"allow_private_urls": True},
        {"fetch_urls": "yes"},
        {"fetch_urls": fetcher, "allow_private_urls": True},
    ):
        with pytest.raises(ConfigurationError):
            OpenAICompatBackend(openai_server.base_url, **options)


def test_the_server_imports_the_same_fetcher_and_guard() -> None:
    pytest.importorskip("fastapi")
    from llava_bridge.server.images import fetch, ssrf

    assert fetch.ImageFetcher is ImageFetcher and ssrf.AddressGuard is AddressGuard


async def _ticks_while(work: Any) -> tuple[Any, int]:
    """Run `work` beside a 10 ms ticker; how many ticks the event loop ran meanwhile."""
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        return await work, ticks
    finally:
        done.set()
        await task


async def test_url_fetches_never_block_the_event_loop(
    tiny_dir: Path, openai_server: OpenAITestServer, host: ImageHost
) -> None:
    """A 2 s fetch leaves room for well over 10 ticks; a blocked loop would allow about one."""
    from llava_bridge.backends.local.backend import TransformersBackend

    local = TransformersBackend(
        str(tiny_dir), local_files_only=True, fetch_urls=True, allow_private_urls=True
    )
    remote = OpenAICompatBackend(openai_server.base_url, fetch_urls=True, allow_private_urls=True)
    async with local, remote:
        for backend in (local, remote):
            result, ticks = await _ticks_while(backend.agenerate(ask(host.url("/late.png"))))
            assert result.text and ticks >= 10, (backend, ticks)
    assert host.requests == ["/late.png", "/late.png"]

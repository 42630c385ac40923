"""Shared pieces of the reliability tests: hostile images, a redirecting HTTP server, a served fake."""

from __future__ import annotations

import base64
import http.server
import io
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.support.local_server import LocalServer, running_server

APP = "fal-ai/llava-llama3-8b-v11"
FAKE_ANSWER = "This is a fake answer from FakeBackend."


def png(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 200, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


GOOD_URI = data_uri(png())


class _Redirector(http.server.BaseHTTPRequestHandler):
    """`/image.png` serves a PNG; `/redirect?to=URL` answers 302 to URL."""

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/image.png":
            body = png()
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        target = urllib.parse.parse_qs(url.query).get("to", ["/image.png"])[0]
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Redirector:
    def __init__(self) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
        self._server.daemon_threads = True
        self.hostport = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def redirect_to(self, target: str) -> str:
        return f"http://{self.hostport}/redirect?" + urllib.parse.urlencode({"to": target})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="session")
def redirector() -> Iterator[Redirector]:
    server = Redirector()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def served(redirector: Redirector) -> Iterator[LocalServer]:
    """`llava-bridge serve --backend fake`, allowed to fetch only from the redirector."""
    with running_server("--backend", "fake", "--allow-url-host", redirector.hostport) as server:
        yield server


def assert_still_serving(base_url: str) -> None:
    """A good request after a bad one still gets its answer."""
    response = httpx.post(f"{base_url}/run/{APP}", json={"image_url": GOOD_URI, "prompt": "ok?"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["output"] == FAKE_ANSWER

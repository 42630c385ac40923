"""Integration tests run offline: sockets only to 127.0.0.1, internet images served locally.

LangChain's `test_image_inputs` downloads a PNG from raw.githubusercontent.com with
`httpx.get`. The fixture below serves a real PNG over HTTP on 127.0.0.1 and points
that one module's `httpx.get` at it (same path, loopback host): the test still
fetches an image over HTTP and sends it through every block form it checks.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import pytest_socket
from langchain_tests.integration_tests import chat_models as standard_chat_tests

from tests.support.local_server import LocalServer, running_server

DATA = Path(__file__).resolve().parents[1] / "data"
INTERNET_IMAGE_HOSTS = frozenset({"raw.githubusercontent.com"})


class _ImageHandler(BaseHTTPRequestHandler):
    """Serves tests/data/astronaut.png at every *.png path."""

    def do_GET(self) -> None:
        if not self.path.endswith(".png"):
            self.send_error(404)
            return
        body = (DATA / "astronaut.png").read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def image_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving a PNG; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def local_server(image_server: str) -> Iterator[LocalServer]:
    """`llava-bridge serve --backend fake` as a real process; image URLs may reach the image server."""
    host = urlsplit(image_server).netloc
    with running_server(
        "--backend",
        "fake",
        "--fake-answers",
        "tests.integration_tests.responders:answer",
        "--allow-url-host",
        host,
    ) as server:
        yield server


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    """Connections from this process may only go to 127.0.0.1 (and unix sockets)."""
    connect = socket.socket.connect
    pytest_socket.socket_allow_hosts(["127.0.0.1", "localhost"], allow_unix_socket=True)
    try:
        yield
    finally:
        socket.socket.connect = connect  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _internet_images_from_loopback(image_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the standard tests' `httpx.get` of internet images at the local image server."""
    local = urlsplit(image_server)

    def get(url: str, **kwargs: Any) -> httpx.Response:
        parts = urlsplit(url)
        if parts.hostname not in INTERNET_IMAGE_HOSTS:
            raise AssertionError(f"Unexpected internet fetch in a standard test: {url}")
        return httpx.get(urlunsplit((local.scheme, local.netloc, parts.path, "", "")), **kwargs)

    monkeypatch.setattr(standard_chat_tests, "httpx", SimpleNamespace(get=get))

"""Shared fixtures for the server tests: images, polling, and an in-process server."""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from PIL import Image

APP = "fal-ai/llava-llama3-8b-v11"
DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    """A small real PNG (64x48)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def data_uri(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode()


def wait_completed(client: httpx.Client, status_url: str, timeout: float = 20.0) -> dict[str, Any]:
    """Poll `status_url?logs=1` until COMPLETED (HTTP 200); return the body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(status_url, params={"logs": "1"})
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            assert body["status"] == "COMPLETED"
            return body
        assert response.status_code == 202, response.text
        time.sleep(0.05)
    raise AssertionError(f"{status_url} did not complete within {timeout} s")


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on an ephemeral 127.0.0.1 port in a thread; yield its URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("The in-process server did not start.")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves a PNG, redirects, slow and oversized answers, and records Host headers."""

    png = b""
    hosts: list[str] = []

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        type(self).hosts.append(self.headers.get("Host", ""))
        if url.path == "/image.png":
            self._send(200, self.png, "image/png")
        elif url.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path == "/slow":
            time.sleep(2)
            self._send(200, self.png, "image/png")
        elif url.path == "/big":
            self._send(200, b"x" * 5000, "image/png")
        elif url.path == "/chunked-big":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(5):
                self.wfile.write(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that give up early (timeout tests) are expected


class LocalHTTP:
    """A small HTTP server on 127.0.0.1 (see `_Handler` for its paths)."""

    def __init__(self, png: bytes) -> None:
        handler: type[_Handler] = type("Handler", (_Handler,), {"png": png, "hosts": []})
        self.hosts: list[str] = handler.hosts
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self.port = self._server.server_address[1]
        self.hostport = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.hostport}{path}"

    def redirect_to(self, target: str) -> str:
        return self.url("/redirect?" + urllib.parse.urlencode({"to": target}))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def http_pair(png_bytes: bytes) -> Iterator[tuple[LocalHTTP, LocalHTTP]]:
    """Two local HTTP servers: tests allow one and not the other."""
    first, second = LocalHTTP(png_bytes), LocalHTTP(png_bytes)
    try:
        yield first, second
    finally:
        first.close()
        second.close()

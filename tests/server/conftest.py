"""Shared fixtures for the server tests: images, polling, and an in-process server."""

from __future__ import annotations

import base64
import contextlib
import io
import threading
import time
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

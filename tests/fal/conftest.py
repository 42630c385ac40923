"""Fixtures: one fal test server per session (reset before each test), backends pointed at it."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image

from llava_bridge.backends.fal.backend import PROXY_VARIABLES, FalBackend
from tests.fal.fal_test_server import FalTestServer

FAST = {"poll_interval": 0.02, "stream_idle_timeout": 2.0, "read_timeout": 5.0, "connect_timeout": 2.0}
"""Backend settings that keep tests quick; a test overrides what it is about."""


@pytest.fixture(scope="session")
def fal_server_session() -> Iterator[FalTestServer]:
    with FalTestServer() as server:
        yield server


@pytest.fixture
def server(fal_server_session: FalTestServer) -> FalTestServer:
    fal_server_session.reset()
    return fal_server_session


@pytest.fixture(params=["h1", "httpx"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which HTTP client FalBackend uses: its own HTTP/1.1 pools, or httpx, which it falls
    back to when a proxy variable is set (NO_PROXY keeps the test server direct)."""
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "httpx":
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return str(request.param)


@pytest.fixture
def make_backend(
    server: FalTestServer, monkeypatch: pytest.MonkeyPatch, transport: str
) -> Iterator[Callable[..., FalBackend]]:
    """Build FalBackends on the test server (with FAST settings) for each transport; all are
    closed afterwards."""
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "LLAVA_FAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    made: list[FalBackend] = []

    def make(**options: Any) -> FalBackend:
        backend = FalBackend(**{"base_url": server.url, **FAST, **options})
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def backend(make_backend: Callable[..., FalBackend]) -> FalBackend:
    return make_backend()


def photo_bytes(width: int = 1600, height: int = 1200, quality: int = 92) -> bytes:
    """A noisy JPEG big enough to be resized and uploaded."""
    image = Image.merge("RGB", [Image.effect_noise((width, height), 40 + 10 * i) for i in range(3)])
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()

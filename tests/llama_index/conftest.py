"""Images of known colours, a backend that names an image's dominant colour, and helpers."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from llava_bridge import FakeBackend, ImageInput, VisionChunk, VisionRequest, VisionResult

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 75),
    "green": (60, 180, 75),
    "yellow": (255, 225, 25),
    "blue": (0, 130, 200),
    "orange": (245, 130, 48),
    "purple": (145, 30, 180),
    "cyan": (70, 240, 240),
    "magenta": (240, 50, 230),
    "lime": (210, 245, 60),
    "pink": (250, 190, 212),
    "teal": (0, 128, 128),
    "lavender": (220, 190, 255),
    "brown": (170, 110, 40),
    "beige": (255, 250, 200),
    "maroon": (128, 0, 0),
    "mint": (170, 255, 195),
    "olive": (128, 128, 0),
    "apricot": (255, 215, 180),
    "navy": (0, 0, 128),
    "grey": (128, 128, 128),
}
"""Twenty colours far enough apart to tell from each other."""


def colour_png(main: str, accent: str | None = None, size: tuple[int, int] = (48, 40)) -> bytes:
    """A PNG mostly of `main`, with a stripe of `accent` across a quarter of it."""
    image = Image.new("RGB", size, PALETTE[main])
    if accent is not None:
        image.paste(PALETTE[accent], (0, 0, size[0], size[1] // 4))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def dominant_name(image: ImageInput) -> str:
    """The palette name of the most frequent colour in the image."""
    pixels = image.to_pil().getcolors(maxcolors=1 << 16)
    assert pixels is not None
    _, rgb = max(pixels)
    return min(PALETTE, key=lambda name: sum((a - b) ** 2 for a, b in zip(PALETTE[name], rgb, strict=True)))


def describe_colour(request: VisionRequest) -> str:
    """A fake model answer that depends on the image: its dominant colour."""
    if request.image is None:
        return f"No image. You asked: {request.prompt}"
    if request.image.is_url:
        return f"An image at {request.image.url}."
    return f"A picture dominated by the colour {dominant_name(request.image)}."


@pytest.fixture
def colour_backend() -> FakeBackend:
    return FakeBackend(describe_colour, model_name="fake-colour-llava")


@pytest.fixture
def red_png() -> bytes:
    return colour_png("red", "blue")


@pytest.fixture
def red_path(tmp_path: Path, red_png: bytes) -> Path:
    path = tmp_path / "red.png"
    path.write_bytes(red_png)
    return path


class PicklableFake(FakeBackend):
    """A FakeBackend that can cross a process boundary (its lock is remade on arrival)."""

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class InFlightCounter:
    """Wraps a backend and records the most requests it had in flight at once."""

    def __init__(self, inner: FakeBackend) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.context_window = inner.context_window
        self.exact_token_counts = inner.exact_token_counts
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def generate(self, request: VisionRequest) -> VisionResult:
        self._enter()
        try:
            return self.inner.generate(request)
        finally:
            self._leave()

    async def agenerate(self, request: VisionRequest) -> VisionResult:
        self._enter()
        try:
            return await self.inner.agenerate(request)
        finally:
            self._leave()

    def stream(self, request: VisionRequest) -> Iterator[VisionChunk]:
        return self.inner.stream(request)

    def astream(self, request: VisionRequest) -> AsyncIterator[VisionChunk]:
        return self.inner.astream(request)


@dataclass
class ColourServer:
    """`llava-bridge serve`'s app on 127.0.0.1 in front of a FakeBackend naming the image's colour."""

    url: str
    backend: FakeBackend


@pytest.fixture(scope="module")
def colour_app() -> Iterator[ColourServer]:
    """The real server app (fal's queue protocol over HTTP) in a thread; stops with the module."""
    import uvicorn

    from llava_bridge.server.app import create_app
    from llava_bridge.server.settings import ServerSettings

    backend = FakeBackend(describe_colour, model_name="fake-colour-llava")
    app = create_app(backend, ServerSettings(db_path=":memory:"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the in-process server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield ColourServer(f"http://127.0.0.1:{port}", backend)
    server.should_exit = True
    thread.join(10)

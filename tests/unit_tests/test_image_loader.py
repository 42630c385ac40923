"""LlavaImageLoader: one Document per image, in order, with bounded concurrency and per-image errors."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from llava_bridge import ConfigurationError, FakeBackend, InvalidImageError, VisionRequest
from llava_bridge.langchain import LlavaImageLoader

from .conftest import DATA


def name_of(request: VisionRequest) -> str:
    assert request.image is not None
    return f"An image of {request.image.size[0]}x{request.image.size[1]} pixels."


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ("coffee.png", "rocket.jpg", "astronaut.png"):
        (tmp_path / name).write_bytes((DATA / name).read_bytes())
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return tmp_path


def test_directory_to_documents_in_order_with_metadata(folder: Path) -> None:
    backend = FakeBackend(name_of)
    loader = LlavaImageLoader(directory=folder, glob="*", prompt="Describe it.", backend=backend)
    documents = loader.load()
    assert [Path(d.metadata["source"]).name for d in documents] == [
        "astronaut.png",
        "coffee.png",
        "rocket.jpg",
    ]
    coffee = documents[1]
    assert coffee.page_content == "An image of 600x400 pixels."
    assert coffee.metadata["mime_type"] == "image/png" and coffee.metadata["width"] == 600
    assert coffee.metadata["size_bytes"] == (folder / "coffee.png").stat().st_size
    assert coffee.metadata["model"] == "fake-llava" and coffee.metadata["request_id"].startswith("fake-")
    assert all(r.prompt == "Describe it." for r in backend.history)


def test_bad_images_are_skipped_and_recorded_or_raised(folder: Path) -> None:
    loader = LlavaImageLoader(directory=folder, backend=FakeBackend(name_of))
    documents = loader.load()
    assert len(documents) == 3
    (failure,) = loader.failures
    assert failure.source.endswith("broken.png") and isinstance(failure.error, InvalidImageError)
    strict = LlavaImageLoader(directory=folder, backend=FakeBackend(name_of), on_error="raise")
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        strict.load()


def test_urls_are_passed_on_unfetched_and_mixed_with_paths() -> None:
    backend = FakeBackend("described")
    loader = LlavaImageLoader(["https://example.com/a.jpg", DATA / "rocket.jpg"], backend=backend)
    documents = loader.load()
    assert [d.metadata["source"] for d in documents] == [
        "https://example.com/a.jpg",
        str(DATA / "rocket.jpg"),
    ]
    assert "mime_type" not in documents[0].metadata  # unknown for an unfetched URL
    assert backend.history[0].image.url == "https://example.com/a.jpg"


class CountingBackend(FakeBackend):
    """A FakeBackend that records the most calls it had in flight at once."""

    def __init__(self) -> None:
        super().__init__("ok")
        self.active = self.peak = 0
        self._count_lock = threading.Lock()

    def _enter(self) -> None:
        with self._count_lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def _leave(self) -> None:
        with self._count_lock:
            self.active -= 1

    def generate(self, request: VisionRequest):  # type: ignore[no-untyped-def]
        self._enter()
        try:
            time.sleep(0.2)  # long enough for the pool's threads to overlap on a busy machine
            return super().generate(request)
        finally:
            self._leave()

    async def agenerate(self, request: VisionRequest):  # type: ignore[no-untyped-def]
        self._enter()
        try:
            await asyncio.sleep(0.02)
            return await super().agenerate(request)
        finally:
            self._leave()


def test_sync_load_is_concurrent_but_bounded() -> None:
    backend = CountingBackend()
    loader = LlavaImageLoader(
        [f"https://example.com/{i}.png" for i in range(12)], backend=backend, max_concurrency=3
    )
    documents = list(loader.lazy_load())
    assert [d.metadata["source"] for d in documents] == [f"https://example.com/{i}.png" for i in range(12)]
    assert backend.peak == 3


async def test_async_load_is_concurrent_bounded_and_ordered() -> None:
    backend = CountingBackend()
    loader = LlavaImageLoader(
        [f"https://example.com/{i}.png" for i in range(10)], backend=backend, max_concurrency=4
    )
    documents = [d async for d in loader.alazy_load()]
    assert [d.metadata["source"] for d in documents] == [f"https://example.com/{i}.png" for i in range(10)]
    assert backend.peak == 4


def test_progress_bar_and_bad_settings(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    LlavaImageLoader(directory=folder, glob="*.png", backend=FakeBackend("x"), show_progress=True).load()
    assert "Describing images" in capsys.readouterr().err
    with pytest.raises(ConfigurationError, match="not a directory"):
        LlavaImageLoader(directory=folder / "coffee.png")
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        LlavaImageLoader("https://example.com/a.png", max_concurrency=0)
    with pytest.raises(ConfigurationError, match="Give image sources"):
        LlavaImageLoader()

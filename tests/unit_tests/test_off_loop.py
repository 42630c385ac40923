"""The adapters' async paths read and decode images in worker threads, never on the event loop's.

Counted, not timed: every data-URI decode and file read is recorded with the thread
it ran in. (tests/integration_tests/test_event_loop.py times the whole call.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from llava_bridge import FakeBackend, ImageInput, images
from llava_bridge.langchain import ChatLlava, LlavaImageLoader, LlavaImageTool

from .conftest import DATA


@pytest.fixture
def image_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread ids in which data URIs were decoded and image files read."""
    seen: list[int] = []

    def recording(function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            seen.append(threading.get_ident())
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(images, "decode_data_uri", recording(images.decode_data_uri))
    monkeypatch.setattr(ImageInput, "from_path", classmethod(recording(ImageInput.from_path.__func__)))
    return seen


def photo_uri() -> str:
    return ImageInput.from_path(DATA / "rocket.jpg").to_data_uri()


def message(uri: str) -> list[HumanMessage]:
    return [HumanMessage(content=[{"type": "text", "text": "What?"}, {"type": "image", "url": uri}])]


async def test_chat_model_decodes_off_the_loop(image_threads: list[int]) -> None:
    llm = ChatLlava(backend=FakeBackend("A rocket."))
    uri = photo_uri()
    image_threads.clear()
    assert (await llm.ainvoke(message(uri))).content == "A rocket."
    assert "".join([str(c.content) async for c in llm.astream(message(uri))]) == "A rocket."
    assert len(image_threads) == 2 and threading.get_ident() not in image_threads


async def test_tool_decodes_off_the_loop(image_threads: list[int]) -> None:
    tool = LlavaImageTool(backend=FakeBackend("A rocket."))
    uri = photo_uri()
    image_threads.clear()
    assert await tool.ainvoke({"image": uri, "question": "What?"}) == "A rocket."
    assert len(image_threads) == 1 and threading.get_ident() not in image_threads


async def test_loader_reads_files_off_the_loop(image_threads: list[int], tmp_path: Path) -> None:
    for name in ("coffee.png", "rocket.jpg"):
        (tmp_path / name).write_bytes((DATA / name).read_bytes())
    loader = LlavaImageLoader(directory=tmp_path, glob="*", backend=FakeBackend("An image."))
    documents = [d async for d in loader.alazy_load()]
    assert len(documents) == 2 and loader.failures == []
    assert len(image_threads) == 2 and threading.get_ident() not in image_threads

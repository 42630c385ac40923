"""Image work (file reads, decode, validation, resize, encode) stays off the event loop.

A ticker coroutine sleeps 5 ms at a time beside a real call (ChatLlava, LlavaImageTool,
LlavaImageLoader through FalBackend to `llava-bridge serve`) with a 12 MP JPEG, and
records how long each sleep really took. Preparing that photo on the loop would stall
it for the whole preparation; off the loop the longest gap stays a small part of it.
The bound is relative to the same preparation timed synchronously on this machine
(reading it, then `ImageInput.prepared()`), so a loaded machine slows both sides alike.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from langchain_core.messages import HumanMessage

from llava_bridge import ImageInput
from llava_bridge.langchain import ChatLlava, LlavaImageLoader, LlavaImageTool
from tests.support.local_server import LocalServer
from tests.support.loop_gaps import ticker_gap, twelve_megapixel_jpeg

T = TypeVar("T")


async def longest_gap(make_call: Callable[[], Awaitable[T]]) -> tuple[float, T]:
    """The longest time the loop took to come back to a 5 ms ticker during a call.

    A first call is not measured: it imports what LangChain and the backend load on first
    use, a one-time cost that is not image work. Two calls are then measured and the
    smaller of their longest gaps is returned: image work on the loop stalls every call,
    while a burst of load on a shared machine rarely hits both.
    """
    await make_call()
    first, _ = await ticker_gap(make_call())
    second, result = await ticker_gap(make_call())
    return min(first, second), result


def sync_time(prepare: Callable[[], Any]) -> float:
    """The faster of two synchronous runs of `prepare`."""
    times = []
    for _ in range(2):
        start = time.perf_counter()
        prepare()
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.fixture(scope="module")
def photo_uri() -> str:
    return "data:image/jpeg;base64," + base64.b64encode(twelve_megapixel_jpeg()).decode("ascii")


@pytest.fixture(scope="module")
def prepare_time(photo_uri: str) -> float:
    """Seconds to read the photo from its data URI and prepare it for the wire, synchronously."""
    return sync_time(lambda: ImageInput.from_url(photo_uri).prepared())


def question(uri: str) -> list[HumanMessage]:
    return [HumanMessage(content=[{"type": "text", "text": "What?"}, {"type": "image", "url": uri}])]


async def test_chat_model_prepares_images_off_the_loop(
    local_server: LocalServer, photo_uri: str, prepare_time: float
) -> None:
    llm = ChatLlava(base_url=local_server.base_url, api_key="k")
    gap, answer = await longest_gap(lambda: llm.ainvoke(question(photo_uri)))
    assert "an image" in str(answer.content)
    assert gap < prepare_time / 2, stalled(gap, prepare_time)


async def test_chat_model_stream_prepares_images_off_the_loop(
    local_server: LocalServer, photo_uri: str, prepare_time: float
) -> None:
    llm = ChatLlava(base_url=local_server.base_url, api_key="k")

    async def collect() -> str:
        return "".join([str(chunk.content) async for chunk in llm.astream(question(photo_uri))])

    gap, text = await longest_gap(collect)
    assert "an image" in text
    assert gap < prepare_time / 2, stalled(gap, prepare_time)


async def test_tool_prepares_images_off_the_loop(
    local_server: LocalServer, photo_uri: str, prepare_time: float
) -> None:
    tool = LlavaImageTool(base_url=local_server.base_url, api_key="k")
    gap, answer = await longest_gap(lambda: tool.ainvoke({"image": photo_uri, "question": "What?"}))
    assert "an image" in answer
    assert gap < prepare_time / 2, stalled(gap, prepare_time)


async def test_loader_reads_and_prepares_files_off_the_loop(
    local_server: LocalServer, tmp_path: Path
) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(twelve_megapixel_jpeg())
    prepare_time = sync_time(lambda: ImageInput.from_path(path).prepared())
    loader = LlavaImageLoader([path], base_url=local_server.base_url, api_key="k")

    async def load() -> list[Any]:
        return [document async for document in loader.alazy_load()]

    gap, documents = await longest_gap(load)
    assert len(documents) == 1 and documents[0].metadata["width"] == 4000 and not loader.failures
    assert gap < prepare_time / 2, stalled(gap, prepare_time)


def stalled(gap: float, prepare_time: float) -> str:
    return f"the loop stalled {gap * 1000:.0f} ms; preparing the photo takes {prepare_time * 1000:.0f} ms"

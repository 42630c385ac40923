"""Image work (file reads, decode, resize, encode) stays off the event loop in every async path.

A ticker coroutine sleeps 5 ms at a time beside the call and records how long each
sleep really took. Preparing a 12 MP JPEG on the loop would stall it for the whole
preparation; off the loop the longest gap stays a small part of it. The bound is
relative to the same preparation timed synchronously on this machine, so a loaded
machine slows both sides alike (and a run that meets a burst of load gets one more try).
The calls go through FalBackend to a fal-protocol server on 127.0.0.1, so the backend's
own resize and upload are covered too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.llms import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.schema import ImageDocument, ImageNode

from llava_bridge import ImageInput
from llava_bridge.llama_index import ImageDescriber, LlavaLLM, LlavaToolSpec
from tests.fal.fal_test_server import FalTestServer
from tests.support.loop_gaps import ticker_gap, twelve_megapixel_jpeg


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "photo.jpg"
    path.write_bytes(twelve_megapixel_jpeg())
    return path


@pytest.fixture(scope="module")
def prepare_seconds(photo: Path) -> float:
    """The faster of two synchronous preparations of the photo: read, decode, shrink, encode."""
    times = []
    for _ in range(2):
        start = time.perf_counter()
        ImageInput.from_path(photo).prepared()
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.fixture(scope="module")
def server() -> Iterator[FalTestServer]:
    with FalTestServer() as running:
        yield running


async def _drain(stream: Awaitable[AsyncIterator[Any]]) -> list[Any]:
    return [item async for item in await stream]


def _llm(url: str) -> LlavaLLM:
    return LlavaLLM(base_url=url, api_key="test")


def _chat(blocks: list[Any]) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, blocks=blocks)]


CALLS: dict[str, Callable[[str, Path], Awaitable[Any]]] = {
    "achat": lambda url, p: _llm(url).achat(_chat([ImageBlock(path=p), TextBlock(text="What?")])),
    "achat-bytes": lambda url, p: _llm(url).achat(
        _chat([ImageBlock(image=p.read_bytes()), TextBlock(text="?")])
    ),
    "achat-grid": lambda url, p: _llm(url).achat(
        _chat([ImageBlock(path=p), ImageBlock(path=p), TextBlock(text="Compare.")])
    ),
    "astream_chat": lambda url, p: _drain(
        _llm(url).astream_chat(_chat([ImageBlock(path=p), TextBlock(text="?")]))
    ),
    "acomplete": lambda url, p: _llm(url).acomplete(
        "What?", image_documents=[ImageDocument(image_path=str(p))]
    ),
    "astream_complete": lambda url, p: _drain(
        _llm(url).astream_complete("What?", image_documents=[ImageDocument(image_path=str(p))])
    ),
    "tool": lambda url, p: LlavaToolSpec(
        base_url=url, api_key="test", allow_local_paths=True
    ).aask_about_image("What?", str(p)),
    "describer": lambda url, p: ImageDescriber(base_url=url, api_key="test").acall(
        [ImageNode(image_path=str(p), metadata={"file_path": str(p)})]
    ),
}


@pytest.mark.parametrize("name", list(CALLS))
async def test_image_work_stays_off_the_event_loop(
    name: str, server: FalTestServer, photo: Path, prepare_seconds: float
) -> None:
    # The better of two runs: a stall on the loop shows in both, a burst of load on the machine rarely.
    gap, result = await ticker_gap(CALLS[name](server.url, photo))
    if gap >= prepare_seconds / 2:
        gap, result = await ticker_gap(CALLS[name](server.url, photo))
    assert result
    stalled, preparing = round(gap * 1000), round(prepare_seconds * 1000)
    assert gap < prepare_seconds / 2, f"{name}: the loop stalled {stalled} ms; preparing takes {preparing} ms"

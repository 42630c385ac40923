"""LlavaLLM -> FalBackend -> real HTTP on 127.0.0.1 -> `llava-bridge serve` -> a fake model.

Two servers: the `llava-bridge serve` process (`--backend fake`, canned answers), and
the same app in this process in front of a FakeBackend that names the image's
colour, to check that the right image arrives from every kind of ImageBlock.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from llama_index.core.llms import ChatMessage, ImageBlock, MessageRole, TextBlock
from PIL import Image

from llava_bridge import FakeBackend, FalBackend, LlavaError
from llava_bridge.llama_index import LlavaLLM
from llava_bridge.server.app import create_app
from llava_bridge.server.settings import ServerSettings
from tests.support.local_server import running_server

from .conftest import colour_png, describe_colour

CANNED = "This is a fake answer from FakeBackend."


class ImageHost:
    """A tiny HTTP server with images to fetch, which records who fetched what."""

    def __init__(self, images: dict[str, bytes]) -> None:
        self.requests: list[tuple[str, str]] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.requests.append((self.path, self.headers.get("User-Agent", "")))
                body = images.get(self.path)
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.address}{path}"


@pytest.fixture(scope="module")
def image_host() -> Iterator[ImageHost]:
    host = ImageHost({"/olive.png": colour_png("olive", "pink"), "/navy.png": colour_png("navy")})
    yield host
    host.httpd.shutdown()


@pytest.fixture(scope="module")
def serve_process(image_host: ImageHost) -> Iterator[Any]:
    with running_server("--backend", "fake", "--allow-url-host", image_host.address) as server:
        yield server


@pytest.fixture(scope="module")
def colour_server(image_host: ImageHost) -> Iterator[str]:
    """The server app in a thread, in front of a FakeBackend that names the image's colour."""
    settings = ServerSettings(db_path=":memory:", allowed_url_hosts=(image_host.address,))
    app = create_app(FakeBackend(describe_colour), settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the in-process server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def llm_for(base_url: str, **options: Any) -> LlavaLLM:
    return LlavaLLM(backend=FalBackend(base_url=base_url, timeout=30, **options))


def ask(*blocks: TextBlock | ImageBlock) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, blocks=list(blocks))]


def big_photo_png() -> bytes:
    """A noisy PNG well over the inline limit, so FalBackend uploads it to storage."""
    image = Image.effect_noise((400, 400), 60).convert("RGB")
    tinted = Image.blend(image, Image.new("RGB", image.size, (128, 0, 0)), 0.9)
    buffer = io.BytesIO()
    tinted.save(buffer, format="PNG")
    assert len(buffer.getvalue()) > 48 * 1024
    return buffer.getvalue()


# -- the right image arrives (colour server) ------------------------------------------------


@pytest.mark.parametrize("source", ["url", "path", "bytes", "buffer", "uploaded"])
def test_each_image_block_kind_reaches_the_model(
    source: str, colour_server: str, image_host: ImageHost, tmp_path: Path
) -> None:
    png = colour_png("olive", "pink")
    expected = "olive"
    if source == "url":
        block = ImageBlock(url=image_host.url("/olive.png"))
    elif source == "path":
        (tmp_path / "olive.png").write_bytes(png)
        block = ImageBlock(path=tmp_path / "olive.png")
    elif source == "bytes":
        block = ImageBlock(image=png)
    elif source == "buffer":
        block = ImageBlock(image=io.BytesIO(png))
    else:
        block, expected = ImageBlock(image=big_photo_png()), "maroon"
    response = llm_for(colour_server).chat(ask(block, TextBlock(text="Which colour?")))
    assert response.message.content == f"A picture dominated by the colour {expected}."


def test_follow_up_question_still_sends_the_earlier_image(colour_server: str) -> None:
    messages = [
        *ask(ImageBlock(image=colour_png("navy")), TextBlock(text="Describe it.")),
        ChatMessage(role=MessageRole.ASSISTANT, content="A navy square."),
        ChatMessage(role=MessageRole.USER, content="Which colour again?"),
    ]
    assert llm_for(colour_server).chat(messages).message.content.endswith("navy.")  # type: ignore[union-attr]


async def test_async_url_image_is_fetched_by_the_server_not_by_us(
    colour_server: str, image_host: ImageHost
) -> None:
    before = len(image_host.requests)
    response = await llm_for(colour_server).achat(
        ask(ImageBlock(url=image_host.url("/navy.png")), TextBlock(text="Colour?"))
    )
    assert response.message.content == "A picture dominated by the colour navy."
    [(path, agent)] = image_host.requests[before:]  # one fetch: the server's
    assert path == "/navy.png"
    assert not agent.startswith("llava-bridge/")  # our client's user agent carries the version


# -- the serve process ----------------------------------------------------------------------


def test_chat_through_the_serve_process(serve_process: Any, image_host: ImageHost, tmp_path: Path) -> None:
    llm = llm_for(serve_process.base_url)
    path = tmp_path / "a.png"
    path.write_bytes(colour_png("teal"))
    blocks = [
        ImageBlock(url=image_host.url("/olive.png")),
        ImageBlock(path=path),
        ImageBlock(image=colour_png("lime")),
    ]
    for block in blocks:
        response = llm.chat(ask(block, TextBlock(text="What is it?")))
        assert response.message.content == CANNED
        usage = response.raw["usage"]  # type: ignore[index]
        assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 576
        assert response.raw["request_id"]  # type: ignore[index]


def test_a_missing_url_image_is_a_typed_error(serve_process: Any, image_host: ImageHost) -> None:
    with pytest.raises(LlavaError, match="404"):
        llm_for(serve_process.base_url).chat(
            ask(ImageBlock(url=image_host.url("/missing.png")), TextBlock(text="?"))
        )


def test_streaming_through_the_serve_process(serve_process: Any) -> None:
    chunks = list(
        llm_for(serve_process.base_url).stream_chat(
            ask(ImageBlock(image=colour_png("red")), TextBlock(text="?"))
        )
    )
    assert len(chunks) > 2
    assert "".join(chunk.delta or "" for chunk in chunks) == CANNED
    assert chunks[-1].message.content == CANNED
    assert chunks[-1].raw["usage"]["completion_tokens"] > 0  # type: ignore[index]


def test_text_only_turns_use_the_placeholder_or_refuse(serve_process: Any) -> None:
    text_only = [ChatMessage(role=MessageRole.USER, content="Hello?")]
    assert llm_for(serve_process.base_url).chat(text_only).message.content == CANNED
    strict = llm_for(serve_process.base_url, text_only="error")
    with pytest.raises(LlavaError):
        strict.chat(text_only)
    assert (
        strict.chat(ask(ImageBlock(image=colour_png("red")), TextBlock(text="?"))).message.content == CANNED
    )


async def test_sync_and_async_agree_over_http(serve_process: Any, tmp_path: Path) -> None:
    llm = llm_for(serve_process.base_url, max_retries=0)
    path = tmp_path / "p.png"
    path.write_bytes(colour_png("cyan"))
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
        *ask(ImageBlock(path=path), TextBlock(text="What is it?")),
    ]

    def summary(text: str | None, raw: Any) -> tuple[Any, ...]:
        usage = dict(raw["usage"])
        return text, usage, raw["finish_reason"], raw["model"]

    chat = llm.chat(messages)
    stream = list(llm.stream_chat(messages))
    achat, astream = await asyncio.gather(llm.achat(messages), _collect(llm, messages))
    results = [
        summary(chat.message.content, chat.raw),
        summary(stream[-1].message.content, stream[-1].raw),
        summary(achat.message.content, achat.raw),
        summary(astream[-1].message.content, astream[-1].raw),
    ]
    assert results[0][0] == CANNED
    assert len({repr(r) for r in results}) == 1, results
    assert [c.delta for c in stream] == [c.delta for c in astream]


async def _collect(llm: LlavaLLM, messages: list[ChatMessage]) -> list[Any]:
    return [chunk async for chunk in await llm.astream_chat(messages)]

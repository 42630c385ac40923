"""LlavaImageTool: answers with an artifact, and errors an agent can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import ToolMessage

from llava_bridge import APIConnectionError, FakeBackend, ImageInput, MissingCredentialsError
from llava_bridge.errors import status_error
from llava_bridge.langchain import LlavaImageTool

from .conftest import DATA


def call(tool: LlavaImageTool, **args: Any) -> ToolMessage:
    message = tool.invoke({"type": "tool_call", "name": tool.name, "id": "call-1", "args": args})
    assert isinstance(message, ToolMessage)
    return message


def test_answer_and_artifact(png_bytes: bytes) -> None:
    backend = FakeBackend("A white cup of black coffee.")
    tool = LlavaImageTool(backend=backend, max_new_tokens=40)
    message = call(tool, image=ImageInput.from_bytes(png_bytes).to_data_uri(), question="What drink?")
    assert message.content == "A white cup of black coffee." and message.status == "success"
    artifact = message.artifact
    assert artifact["model"] == "fake-llava" and artifact["request_id"].startswith("fake-")
    assert artifact["usage"]["output_tokens"] == 6 and artifact["usage"]["estimated"] is True
    assert artifact["image"] == "data URI"
    (request,) = backend.history
    assert request.prompt == "What drink?" and request.max_new_tokens == 40
    assert request.image == ImageInput.from_bytes(png_bytes)


async def test_async_run_and_plain_args() -> None:
    tool = LlavaImageTool(backend=FakeBackend("A rocket."))
    assert await tool.ainvoke({"image": "https://example.com/r.jpg", "question": "What?"}) == "A rocket."
    message = await tool.ainvoke(
        {
            "type": "tool_call",
            "name": tool.name,
            "id": "c",
            "args": {"image": "https://e.com/r.jpg", "question": "?"},
        }
    )
    assert message.artifact["image"] == "https://e.com/r.jpg"


def test_local_paths_only_when_allowed() -> None:
    path = str(DATA / "rocket.jpg")
    refused = call(LlavaImageTool(backend=FakeBackend("x")), image=path, question="What?")
    assert refused.status == "error" and "not an http(s) URL or a data URI" in str(refused.content)
    backend = FakeBackend("A rocket.")
    allowed = call(LlavaImageTool(backend=backend, allow_local_paths=True), image=path, question="What?")
    assert allowed.content == "A rocket." and backend.history[-1].image.mime_type == "image/jpeg"


def test_not_an_image_is_an_error_the_agent_can_read(tmp_path: Path) -> None:
    page = tmp_path / "page.png"
    page.write_text("<html>not found</html>")
    message = call(
        LlavaImageTool(backend=FakeBackend("x"), allow_local_paths=True), image=str(page), question="?"
    )
    assert message.status == "error"
    assert "text (HTML, XML or JSON)" in str(message.content) and "JPEG, PNG" in str(message.content)


@pytest.mark.parametrize(
    ("error", "advice"),
    [
        (status_error(422, {"detail": "Could not download image"}), "URL may be unreachable"),
        (APIConnectionError("connection refused"), "unavailable right now"),
        (status_error(429, {"detail": "slow"}), "unavailable right now"),
    ],
)
def test_server_failures_become_tool_errors_with_advice(error: Exception, advice: str) -> None:
    message = call(
        LlavaImageTool(backend=FakeBackend(error=error)), image="https://e.com/a.png", question="?"
    )
    assert message.status == "error" and advice in str(message.content)


def test_configuration_errors_reach_the_developer() -> None:
    tool = LlavaImageTool(backend=FakeBackend(error=MissingCredentialsError()))
    with pytest.raises(MissingCredentialsError, match="FAL_KEY"):
        call(tool, image="https://e.com/a.png", question="?")


def test_schema_describes_both_arguments_and_hides_the_key() -> None:
    tool = LlavaImageTool(api_key="fal-very-secret")
    schema = tool.tool_call_schema.model_json_schema()
    assert set(schema["properties"]) == {"image", "question"}
    assert "data:image" in schema["properties"]["image"]["description"]
    assert "fal-very-secret" not in repr(tool)


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (refused before any decoding)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_too_large_image_is_an_error_the_agent_can_read() -> None:
    import base64

    uri = "data:image/png;base64," + base64.b64encode(huge_png_header(9_000, 9_000)).decode()
    message = call(LlavaImageTool(backend=FakeBackend("x")), image=uri, question="What?")
    assert message.status == "error"
    assert "9000x9000 px, over the limit" in str(message.content) and "resize it first" in str(
        message.content
    )

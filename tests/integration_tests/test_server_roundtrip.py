"""ChatLlava, LlavaImageTool and LlavaImageLoader over real HTTP to `llava-bridge serve`.

Image URLs point at the loopback image server, which the local server may reach
(`--allow-url-host`); an unreachable URL must come back as an error that names
the problem, and as advice an agent can act on.
"""

from __future__ import annotations

import pytest
from langchain_core import exceptions as lc_errors
from langchain_core.messages import HumanMessage, ToolMessage

from llava_bridge.langchain import ChatLlava, LlavaImageLoader, LlavaImageTool
from tests.support.local_server import LocalServer

from .conftest import DATA


def url_message(url: str) -> HumanMessage:
    return HumanMessage(content=[{"type": "text", "text": "What is this?"}, {"type": "image", "url": url}])


def test_url_image_is_fetched_by_the_server(local_server: LocalServer, image_server: str) -> None:
    llm = ChatLlava(base_url=local_server.base_url, api_key="k")
    answer = llm.invoke([url_message(f"{image_server}/astronaut.png")])
    assert answer.content and answer.response_metadata["request_id"]
    assert answer.usage_metadata is not None and answer.usage_metadata["input_tokens"] > 576


def test_unreachable_image_url_is_a_non_retryable_error(local_server: LocalServer, image_server: str) -> None:
    llm = ChatLlava(base_url=local_server.base_url, api_key="k")
    with pytest.raises(lc_errors.ModelError) as caught:
        llm.invoke([url_message(f"{image_server}/missing.jpg")])
    assert caught.value.is_retryable is False
    assert "404" in str(caught.value)


async def test_tool_reports_an_unreachable_url_as_advice(
    local_server: LocalServer, image_server: str
) -> None:
    tool = LlavaImageTool(base_url=local_server.base_url, api_key="k")
    call = {"type": "tool_call", "name": tool.name, "id": "c1"}
    good = await tool.ainvoke({**call, "args": {"image": f"{image_server}/a.png", "question": "What?"}})
    assert isinstance(good, ToolMessage) and good.status == "success" and good.artifact["request_id"]
    bad = tool.invoke({**call, "args": {"image": f"{image_server}/missing.jpg", "question": "What?"}})
    assert isinstance(bad, ToolMessage) and bad.status == "error"
    assert "could not use this image" in str(bad.content) and "data: URI" in str(bad.content)


async def test_loader_describes_a_folder_through_the_server(local_server: LocalServer) -> None:
    loader = LlavaImageLoader(directory=DATA, glob="*.*", base_url=local_server.base_url, api_key="k")
    documents = [d async for d in loader.alazy_load()]
    assert sorted(d.metadata["source"].rsplit("/", 1)[-1] for d in documents) == [
        "astronaut.png",
        "coffee.png",
        "rocket.jpg",
    ]
    assert all(d.page_content and d.metadata["model"] == "fal-ai/llava-llama3-8b-v11" for d in documents)
    assert loader.failures == []

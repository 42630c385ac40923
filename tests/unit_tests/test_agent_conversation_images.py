"""In a real `create_agent` run, LlavaImageTool reads the image from the conversation.

The user's message holds two images. The agent's own (scripted) model calls the tool
first with a question only, then with an index; neither call copies image data into
the tool arguments. LangGraph's ToolNode hands the tool the agent's state, and the
tool picks the latest image, then the one the index names.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable

from llava_bridge import FakeBackend, ImageInput, InvalidRequestError
from llava_bridge.langchain import LlavaImageTool
from llava_bridge.langchain.conversation_images import ImageReference, parse_reference

from .conftest import DATA


class ScriptedAgentModel(BaseChatModel):
    """Makes the tool calls in `calls`, one per turn, then answers with every tool result."""

    calls: list[dict[str, Any]]

    @property
    def _llm_type(self) -> str:
        return "scripted-agent-model"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, AIMessage]:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if len(results) < len(self.calls):
            args = self.calls[len(results)]
            call = {
                "name": "ask_about_image",
                "args": args,
                "id": f"call-{len(results)}",
                "type": "tool_call",
            }
            message = AIMessage(content="", tool_calls=[call])
        else:
            message = AIMessage(content=" | ".join(str(r.content) for r in results))
        return ChatResult(generations=[ChatGeneration(message=message)])


def size_of(request: Any) -> str:
    width, height = request.image.size
    return f"{width}x{height}"


def two_image_message() -> HumanMessage:
    coffee = base64.b64encode((DATA / "coffee.png").read_bytes()).decode("ascii")
    rocket = ImageInput.from_path(DATA / "rocket.jpg").to_data_uri()
    return HumanMessage(
        content=[
            {"type": "text", "text": "Here are my two photos. What is in each?"},
            {"type": "image", "base64": coffee, "mime_type": "image/png"},
            {"type": "image_url", "image_url": {"url": rocket}},
        ]
    )


CALLS = [{"question": "What is in the latest image?"}, {"question": "And the first?", "image": 0}]


@pytest.mark.parametrize(
    ("image", "index"),
    [
        (None, -1),
        ("", -1),
        ("latest", -1),
        (" Last ", -1),
        ("first", 0),
        (0, 0),
        (-2, -2),
        ("1", 1),
        ("#1", 1),
        ("image 2", 2),
    ],
)
def test_references_name_an_index(image: Any, index: int) -> None:
    assert parse_reference(image) == ImageReference(index)


def test_anything_else_is_an_image_source() -> None:
    assert parse_reference("https://example.com/1.png") == "https://example.com/1.png"
    assert parse_reference(" photo.jpg ") == "photo.jpg"


def build(calls: list[dict[str, Any]]) -> tuple[Any, FakeBackend]:
    backend = FakeBackend(lambda request: f"A {size_of(request)} image.")
    agent = create_agent(ScriptedAgentModel(calls=calls), tools=[LlavaImageTool(backend=backend)])
    return agent, backend


def check(messages: list[BaseMessage], backend: FakeBackend) -> None:
    coffee = ImageInput.from_path(DATA / "coffee.png")
    rocket = ImageInput.from_path(DATA / "rocket.jpg")
    assert [r.image for r in backend.history] == [rocket, coffee]
    tool_calls = [call for m in messages if isinstance(m, AIMessage) for call in m.tool_calls]
    assert [call["args"] for call in tool_calls] == CALLS
    arguments = json.dumps([call["args"] for call in tool_calls])
    assert "base64" not in arguments and "data:" not in arguments and len(arguments) < 200
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert [r.status for r in results] == ["success", "success"]
    assert [r.artifact["image"] for r in results] == [
        "conversation image 2 of 2",
        "conversation image 1 of 2",
    ]
    assert messages[-1].content == f"A {rocket.size[0]}x{rocket.size[1]} image. | A 600x400 image."


def test_agent_tool_reads_the_latest_image_then_the_indexed_one() -> None:
    agent, backend = build(CALLS)
    state = agent.invoke({"messages": [two_image_message()]})
    check(state["messages"], backend)


async def test_agent_tool_reads_conversation_images_async() -> None:
    agent, backend = build(CALLS)
    state = await agent.ainvoke({"messages": [two_image_message()]})
    check(state["messages"], backend)


@pytest.mark.parametrize(
    ("image", "advice"),
    [
        (5, "There is no image 5: the conversation holds 2 image(s)"),
        ("#-3", "There is no image -3"),
    ],
)
def test_a_reference_to_no_image_is_advice_for_the_agent(image: Any, advice: str) -> None:
    agent, backend = build([{"question": "What?", "image": image}])
    state = agent.invoke({"messages": [two_image_message()]})
    (result,) = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert result.status == "error" and advice in str(result.content) and backend.history == []


def test_a_conversation_without_images_is_advice_for_the_agent() -> None:
    agent, backend = build([{"question": "What?"}])
    state = agent.invoke({"messages": [HumanMessage("Describe my photo.")]})
    (result,) = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert result.status == "error" and "The conversation holds no image" in str(result.content)
    assert backend.history == []


def test_the_model_cannot_forge_the_runtime() -> None:
    """`runtime` is not in the schema the model sees; a forged one is replaced by ToolNode's."""
    agent, backend = build([{"question": "What?", "runtime": {"state": {"messages": []}}}])
    state = agent.invoke({"messages": [two_image_message()]})
    (result,) = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert result.status == "success" and len(backend.history) == 1
    assert "runtime" not in LlavaImageTool(backend=backend).tool_call_schema.model_json_schema()["properties"]


def test_outside_an_agent_an_omitted_image_is_raised() -> None:
    tool = LlavaImageTool(backend=FakeBackend("x"))
    for args in (
        {"question": "What?"},
        {"question": "What?", "image": "latest"},
        {"question": "?", "image": 1},
    ):
        with pytest.raises(InvalidRequestError, match="outside an agent"):
            tool.invoke(args)
    assert tool.invoke({"question": "What?", "image": "https://example.com/a.png"}) == "x"

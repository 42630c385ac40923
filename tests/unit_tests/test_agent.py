"""A real LangChain agent (`create_agent`) calls LlavaImageTool and uses its answer.

The agent's own model is scripted: it can call tools (LLaVA cannot), asks the
image tool once, then answers with what the tool returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool

from llava_bridge import FakeBackend, ImageInput, VisionRequest
from llava_bridge.langchain import LlavaImageTool

from .conftest import DATA


class ScriptedToolCaller(BaseChatModel):
    """Calls `ask_about_image` on `image` first; once a tool answered, reports that answer."""

    image: str
    bound_tools: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-caller"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, AIMessage]:
        names = [convert_to_openai_tool(t)["function"]["name"] for t in tools]
        return self.model_copy(update={"bound_tools": names})

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            call = {
                "name": "ask_about_image",
                "args": {"image": self.image, "question": "What is in the cup?"},
            }
            message = AIMessage(content="", tool_calls=[{**call, "id": "call-1", "type": "tool_call"}])
        else:
            message = AIMessage(content=f"According to the vision tool: {results[-1].content}")
        return ChatResult(generations=[ChatGeneration(message=message)])


def describe(request: VisionRequest) -> str:
    assert request.image is not None and request.image.size is not None
    width, height = request.image.size
    return f"A {width}x{height} photo; asked '{request.prompt}', I see black coffee."


def build_agent() -> tuple[Any, FakeBackend, ScriptedToolCaller]:
    image = ImageInput.from_path(DATA / "coffee.png").to_data_uri()
    backend = FakeBackend(describe)
    model = ScriptedToolCaller(image=image)
    agent = create_agent(
        model, tools=[LlavaImageTool(backend=backend)], system_prompt="Use tools for images."
    )
    return agent, backend, model


def check_run(messages: list[BaseMessage], backend: FakeBackend) -> None:
    tool_messages = [m for m in messages if isinstance(m, ToolMessage)]
    assert len(tool_messages) == 1 and tool_messages[0].name == "ask_about_image"
    assert tool_messages[0].artifact["model"] == "fake-llava"
    assert len(backend.history) == 1 and backend.history[0].image.mime_type == "image/png"
    final = messages[-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert final.content == (
        "According to the vision tool: A 600x400 photo; asked 'What is in the cup?', I see black coffee."
    )


def test_agent_calls_the_image_tool_and_uses_its_answer() -> None:
    agent, backend, _ = build_agent()
    state = agent.invoke({"messages": [HumanMessage("What is in the cup in my photo?")]})
    check_run(state["messages"], backend)


async def test_agent_runs_the_tool_natively_async() -> None:
    agent, backend, _ = build_agent()
    state = await agent.ainvoke({"messages": [HumanMessage("What is in the cup in my photo?")]})
    check_run(state["messages"], backend)

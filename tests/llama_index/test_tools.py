"""LlavaToolSpec: tool metadata, direct calls, and agents (FunctionAgent, ReActAgent) that use it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent, ReActAgent
from llama_index.core.base.llms.types import ToolCallBlock
from llama_index.core.llms import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools.tool_spec.base import BaseToolSpec
from llama_index.core.workflow import Context

from llava_bridge import ConfigurationError, FakeBackend, InvalidImageError, VisionRequest
from llava_bridge.llama_index import LlavaLLM, LlavaToolSpec

from .conftest import colour_png, data_uri


def test_is_a_tool_spec_with_four_functions() -> None:
    assert BaseToolSpec.__name__ in [base.__name__ for base in LlavaToolSpec.__mro__]
    tools = LlavaToolSpec(backend=FakeBackend()).to_tool_list()
    assert [tool.metadata.name for tool in tools] == ["ask_about_image", "describe_image"]
    for tool in tools:
        assert len(tool.metadata.description) <= 1024
        assert tool.metadata.to_openai_tool()["function"]["name"] == tool.metadata.name
        assert tool.async_fn is not None and tool.fn is not None
    schema = tools[0].metadata.get_parameters_dict()
    assert schema["required"] == ["question"]
    assert "latest image" in schema["properties"]["image"]["description"]


def test_tools_call_and_acall_answer_from_the_image(colour_backend: FakeBackend) -> None:
    ask, describe = LlavaToolSpec(backend=colour_backend, describe_prompt="Say the colour.").to_tool_list()
    uri = data_uri(colour_png("purple", "lime"))
    output = ask.call(image=uri, question="What colour is it?")
    assert output.content == "A picture dominated by the colour purple."
    assert not output.is_error
    assert colour_backend.history[-1].prompt == "What colour is it?"
    assert describe.call(image=uri).content == output.content
    assert colour_backend.history[-1].prompt == "Say the colour."


async def test_async_tools(colour_backend: FakeBackend) -> None:
    spec = LlavaToolSpec(backend=colour_backend)
    uri = data_uri(colour_png("beige"))
    assert await spec.aask_about_image("Colour?", uri) == spec.ask_about_image("Colour?", uri)
    ask = spec.to_tool_list()[0]
    assert (await ask.acall(image=uri, question="Colour?")).content.endswith("beige.")


def test_url_is_handed_to_the_backend_unfetched(colour_backend: FakeBackend) -> None:
    answer = LlavaToolSpec(backend=colour_backend).describe_image("https://192.0.2.1/dog.jpg")
    assert answer == "An image at https://192.0.2.1/dog.jpg."


def test_local_paths_only_when_allowed(colour_backend: FakeBackend, red_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="is not an image this tool can open"):
        LlavaToolSpec(backend=colour_backend).describe_image(str(red_path))
    assert colour_backend.history == []
    allowed = LlavaToolSpec(backend=colour_backend, allow_local_paths=True)
    assert allowed.describe_image(str(red_path)) == "A picture dominated by the colour red."


def test_settings_with_a_backend_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="base_url="):
        LlavaToolSpec(backend=FakeBackend(), base_url="http://127.0.0.1:1")


async def test_function_agent_calls_the_tool_and_uses_its_answer(colour_backend: FakeBackend) -> None:
    uri = data_uri(colour_png("maroon", "mint"))
    seen: list[list[ChatMessage]] = []

    def script(messages: list[ChatMessage], **kwargs: Any) -> ChatMessage:
        """A tool-calling LLM: first ask LLaVA, then answer from the tool's output."""
        seen.append(list(messages))
        results = [m for m in messages if m.role == MessageRole.TOOL]
        if not results:
            assert {tool.metadata.name for tool in kwargs["tools"]} == {"ask_about_image", "describe_image"}
            call = ToolCallBlock(
                tool_call_id="call-1",
                tool_name="ask_about_image",
                tool_kwargs={"image": uri, "question": "Which colour fills the picture?"},
            )
            return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])
        return ChatMessage(
            role=MessageRole.ASSISTANT, content=f"LLaVA looked and said: {results[-1].content}"
        )

    agent = FunctionAgent(
        tools=LlavaToolSpec(backend=colour_backend).to_tool_list(),
        llm=MockFunctionCallingLLM(response_generator=script),
    )
    response = await agent.run(user_msg="What colour is my picture?")
    assert str(response) == "LLaVA looked and said: A picture dominated by the colour maroon."
    assert [r.prompt for r in colour_backend.history] == ["Which colour fills the picture?"]
    assert len(seen) == 2
    assert response.tool_calls[0].tool_output.content == "A picture dominated by the colour maroon."


async def test_function_agent_sees_tool_errors_as_text(colour_backend: FakeBackend) -> None:
    def script(messages: list[ChatMessage], **kwargs: Any) -> ChatMessage:
        results = [m for m in messages if m.role == MessageRole.TOOL]
        if not results:
            call = ToolCallBlock(
                tool_call_id="c", tool_name="describe_image", tool_kwargs={"image": "cat.png"}
            )
            return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])
        return ChatMessage(role=MessageRole.ASSISTANT, content=f"Tool failed: {results[-1].content}")

    agent = FunctionAgent(
        tools=LlavaToolSpec(backend=colour_backend).to_tool_list(),
        llm=MockFunctionCallingLLM(response_generator=script),
    )
    response = await agent.run(user_msg="Describe cat.png")
    assert "is not an image this tool can open: give an http(s) URL, or leave image empty" in str(response)
    assert colour_backend.history == []


def react_script(request: VisionRequest) -> str:
    """LLaVA itself as the ReAct reasoner (text-only turns), scripted through FakeBackend."""
    assert "ask_about_image" in request.messages[0].content  # the tool list is in the system prompt
    transcript = "\n".join(m.content for m in request.messages if m.role != "system")
    if "Observation:" not in transcript:
        action_input = json.dumps({"image": "https://192.0.2.1/flag.png", "question": "Colours?"})
        return f"Thought: I need to look at the image.\nAction: ask_about_image\nAction Input: {action_input}"
    observation = transcript.rsplit("Observation:", 1)[1].strip()
    return f"Thought: I can answer without using any more tools.\nAnswer: The tool saw: {observation}"


async def test_react_agent_with_llava_as_reasoner_and_tool(colour_backend: FakeBackend) -> None:
    reasoner = FakeBackend(react_script, model_name="fake-reasoner")
    agent = ReActAgent(
        tools=LlavaToolSpec(backend=colour_backend).to_tool_list(),
        llm=LlavaLLM(backend=reasoner, max_new_tokens=200),
    )
    response = await agent.run(user_msg="What colours has the flag?")
    assert str(response) == "The tool saw: An image at https://192.0.2.1/flag.png."
    assert [r.prompt for r in colour_backend.history] == ["Colours?"]
    assert len(reasoner.history) == 2
    assert reasoner.history[0].messages[0].role == "system"


@pytest.mark.parametrize(("option", "value"), [("max_new_tokens", 0), ("describe_prompt", "  ")])
def test_bad_settings_fail_at_construction(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        LlavaToolSpec(backend=FakeBackend(), **{option: value})


@pytest.mark.parametrize("workflow", ["FunctionAgent", "AgentWorkflow"])
async def test_agent_tools_read_the_images_of_the_conversation(
    colour_backend: FakeBackend, workflow: str
) -> None:
    """The model names images by reference; the tools read them from the agent's Context."""
    calls = [
        {"question": "Which colour fills the picture?"},  # no image: the latest
        {"question": "And this one?", "image": "0"},  # an index: the first
        {"image": "first"},
    ]
    names = ["ask_about_image", "ask_about_image", "describe_image"]
    made: list[ToolCallBlock] = []

    def script(messages: list[ChatMessage], **kwargs: Any) -> ChatMessage:
        results = [m for m in messages if m.role == MessageRole.TOOL]
        if len(results) < len(calls):
            step = len(results)
            call = ToolCallBlock(tool_call_id=f"call-{step}", tool_name=names[step], tool_kwargs=calls[step])
            made.append(call)
            return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])
        return ChatMessage(role=MessageRole.ASSISTANT, content=" | ".join(str(r.content) for r in results))

    agent: FunctionAgent | AgentWorkflow = FunctionAgent(
        name="looker",
        description="Looks at the user's pictures.",
        tools=LlavaToolSpec(backend=colour_backend).to_tool_list(),
        llm=MockFunctionCallingLLM(response_generator=script),
    )
    if workflow == "AgentWorkflow":
        agent = AgentWorkflow(agents=[agent], root_agent="looker")
    question = ChatMessage(
        role=MessageRole.USER,
        blocks=[
            TextBlock(text="Compare my two pictures."),
            ImageBlock(image=colour_png("teal"), image_mimetype="image/png"),
            ImageBlock(image=colour_png("orange"), image_mimetype="image/png"),
        ],
    )
    response = await agent.run(user_msg=question)
    assert str(response) == (
        "A picture dominated by the colour orange. | A picture dominated by the colour teal. "
        "| A picture dominated by the colour teal."
    )
    assert [r.prompt for r in colour_backend.history][:2] == [
        "Which colour fills the picture?",
        "And this one?",
    ]
    for call in made:  # what the model had to write: no image data
        assert len(json.dumps(call.tool_kwargs)) < 100
        assert "base64" not in json.dumps(call.tool_kwargs)
    for result in response.tool_calls:
        assert "ctx" not in result.tool_kwargs
        assert not result.tool_output.is_error


async def test_agent_errors_say_what_the_model_can_do(colour_backend: FakeBackend) -> None:
    def script(messages: list[ChatMessage], **kwargs: Any) -> ChatMessage:
        results = [m for m in messages if m.role == MessageRole.TOOL]
        if not results:
            call = ToolCallBlock(tool_call_id="c", tool_name="describe_image", tool_kwargs={"image": "5"})
            return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])
        return ChatMessage(role=MessageRole.ASSISTANT, content=str(results[-1].content))

    agent = FunctionAgent(
        tools=LlavaToolSpec(backend=colour_backend).to_tool_list(),
        llm=MockFunctionCallingLLM(response_generator=script),
    )
    one_image = ChatMessage(
        role=MessageRole.USER, blocks=[ImageBlock(image=colour_png("red")), TextBlock(text="?")]
    )
    response = await agent.run(user_msg=one_image)
    assert "holds 1 image; leave image empty for the latest, or give an index from 0 to 0" in str(response)
    response = await agent.run(user_msg="Describe my photo.")
    assert "holds no image. Ask the user to attach one, or pass an http(s) URL" in str(response)
    assert colour_backend.history == []


async def test_outside_an_agent_an_omitted_image_is_a_clear_error(colour_backend: FakeBackend) -> None:
    spec = LlavaToolSpec(backend=colour_backend)
    ask, describe = spec.to_tool_list()
    with pytest.raises(
        InvalidImageError, match=r"describe_image\(\) got no image and has no agent conversation"
    ):
        spec.describe_image()
    with pytest.raises(InvalidImageError, match="pass image="):
        await spec.aask_about_image("What is it?", "latest")
    with pytest.raises(InvalidImageError, match="give the tool to a FunctionAgent or AgentWorkflow"):
        await ask.acall(question="What is it?")
    with pytest.raises(InvalidImageError, match="pass image="):
        describe.call()
    context = Context(FunctionAgent(tools=[], llm=MockFunctionCallingLLM()))
    with pytest.raises(ConfigurationError, match="needs the async tool"):
        spec.ask_about_image("What is it?", ctx=context)
    assert colour_backend.history == []

"""LangChain's own standard unit suites for ChatLlava and LlavaImageTool."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests, ToolsUnitTests

from llava_bridge import FakeBackend
from llava_bridge.langchain import ChatLlava, LlavaImageTool


class TestChatLlavaUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatLlava]:
        return ChatLlava

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "fal-ai/llava-llama3-8b-v11"}

    @property
    def has_tool_calling(self) -> bool:
        # bind_tools is overridden only to raise a clear NotImplementedError: LLaVA has no tools.
        return False

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        # FAL_KEY is not copied into api_key: FalBackend's key rule decides where it goes
        # (tests/reliability/test_key_rule.py), so that it never reaches a base_url= in code.
        return ({}, {}, {})


class TestLlavaImageToolUnit(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[LlavaImageTool]:
        return LlavaImageTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"backend": FakeBackend("A cup of coffee.")}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"image": "https://example.com/coffee.png", "question": "What is in the cup?"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        # FAL_KEY is not copied into api_key: FalBackend's key rule decides where it goes
        # (tests/reliability/test_key_rule.py), so that it never reaches a base_url= in code.
        return ({}, {}, {})

"""LangChain's own standard unit suites for ChatLlava and LlavaImageTool."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from langchain_tests.unit_tests import ChatModelUnitTests, ToolsUnitTests

from llava_bridge import FakeBackend
from llava_bridge.langchain import ChatLlava, LlavaImageTool

# The module, not the function langchain_core.load re-exports under the same name.
lc_load = importlib.import_module("langchain_core.load.load")


@pytest.fixture(autouse=True)
def _chat_llava_in_the_load_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the standard test_serdes revive ChatLlava as it is written.

    It loads with `allowed_objects="all"`, which admits only the classes in langchain-core's
    own mapping (its partner packages); users of a package outside it name the class,
    `load(data, valid_namespaces=["llava_bridge"], allowed_objects=[ChatLlava])`, as
    tests/unit_tests/test_chat_settings.py does.
    """
    path = ("llava_bridge", "langchain", "chat_models", "ChatLlava")
    monkeypatch.setitem(lc_load.ALL_SERIALIZABLE_MAPPINGS, path, path)
    monkeypatch.setattr(lc_load, "_default_class_paths_cache", {})


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

"""LangChain's standard integration suites for ChatLlava and LlavaImageTool.

`TestChatLlavaLocalServer` and `TestLlavaImageToolLocalServer` use the default
`FalBackend` over real HTTP against `llava-bridge serve --backend fake
--fake-answers tests.integration_tests.responders:answer`, started as a subprocess
on 127.0.0.1. `TestChatLlavaInProcess` runs the whole chat-model suite against a `FakeBackend`
whose answers are computed from the request (JSON for the schema the prompt
asks for), so the structured-output and JSON-mode tests check real parsing.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests, ToolsIntegrationTests

from llava_bridge import FakeBackend, ImageInput
from llava_bridge.langchain import ChatLlava, LlavaImageTool
from tests.support.local_server import LocalServer

from .conftest import DATA
from .responders import answer


class _OnLocalServer:
    """Points the default FalBackend at the session's local fal-compatible server."""

    base_url = ""

    @pytest.fixture(autouse=True)
    def _use_local_server(self, local_server: LocalServer) -> None:
        self.base_url = local_server.base_url

    @property
    def server_params(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "api_key": "local-test-key", "timeout": 30}


class _ChatLlavaCapabilities(ChatModelIntegrationTests):
    """What ChatLlava supports, whichever backend answers."""

    @property
    def chat_model_class(self) -> type[ChatLlava]:
        return ChatLlava

    @property
    def has_tool_calling(self) -> bool:
        # LLaVA has no tool calling; bind_tools is overridden only to raise a clear error.
        return False

    @property
    def supports_json_mode(self) -> bool:
        # Both backends below answer from the request (tests/integration_tests/responders.py), so
        # the JSON that comes back is what the prompt's schema asked for.
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "fal-ai/llava-next"


class _LlavaImageToolExample(ToolsIntegrationTests):
    @property
    def tool_constructor(self) -> type[LlavaImageTool]:
        return LlavaImageTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        image = ImageInput.from_path(DATA / "coffee.png").to_data_uri()
        return {"image": image, "question": "What is in the cup?"}


class TestChatLlavaLocalServer(_OnLocalServer, _ChatLlavaCapabilities):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "fal-ai/llava-llama3-8b-v11", **self.server_params}

    @property
    def supports_image_urls(self) -> bool:
        # The test's URL block names raw.githubusercontent.com, which the server would fetch from
        # the internet; URL images over the server are tested with a loopback URL in
        # test_server_roundtrip.py instead.
        return False


class TestLlavaImageToolLocalServer(_OnLocalServer, _LlavaImageToolExample):
    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return self.server_params


class TestChatLlavaInProcess(_ChatLlavaCapabilities):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"backend": FakeBackend(answer, model_name="fake-llava-responder")}

    @property
    def supports_image_urls(self) -> bool:
        # URLs are handed to the backend unfetched; the in-process fake does not fetch them.
        return True


class TestLlavaImageToolInProcess(_LlavaImageToolExample):
    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"backend": FakeBackend(answer)}

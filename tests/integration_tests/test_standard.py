"""LangChain's standard integration suites for ChatLlava and LlavaImageTool.

`TestChatLlavaInProcess` runs the whole chat-model suite against a `FakeBackend`
whose answers are computed from the request (JSON for the schema the prompt
asks for), so the structured-output and JSON-mode tests check real parsing.
"""

from __future__ import annotations

from typing import Any

from langchain_tests.integration_tests import ChatModelIntegrationTests, ToolsIntegrationTests

from llava_bridge import FakeBackend, ImageInput
from llava_bridge.langchain import ChatLlava, LlavaImageTool

from .conftest import DATA
from .responders import answer


class TestChatLlavaInProcess(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatLlava]:
        return ChatLlava

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"backend": FakeBackend(answer, model_name="fake-llava-responder")}

    @property
    def has_tool_calling(self) -> bool:
        # LLaVA has no tool calling; bind_tools is overridden only to raise a clear error.
        return False

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return True

    @property
    def supports_image_urls(self) -> bool:
        # URLs are handed to the backend unfetched; the in-process fake does not fetch them.
        return True

    @property
    def model_override_value(self) -> str:
        return "fal-ai/llava-next"


class TestLlavaImageToolInProcess(ToolsIntegrationTests):
    @property
    def tool_constructor(self) -> type[LlavaImageTool]:
        return LlavaImageTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"backend": FakeBackend(answer)}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        image = ImageInput.from_path(DATA / "coffee.png").to_data_uri()
        return {"image": image, "question": "What is in the cup?"}

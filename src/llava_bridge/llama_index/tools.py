"""`LlavaToolSpec`: LLaVA as agent tools that answer questions about an image."""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.tools.tool_spec.base import SPEC_FUNCTION_TYPE, BaseToolSpec
from pydantic import SecretStr

from llava_bridge.backends.base import Backend
from llava_bridge.defaults import DETAILED_DESCRIBE_PROMPT
from llava_bridge.errors import ConfigurationError
from llava_bridge.images import ImageInput
from llava_bridge.llama_index._backend import resolve_backend
from llava_bridge.types import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS_LIMIT, VisionRequest

__all__ = ["DEFAULT_DESCRIBE_PROMPT", "LlavaToolSpec"]

DEFAULT_DESCRIBE_PROMPT = DETAILED_DESCRIBE_PROMPT


class LlavaToolSpec(BaseToolSpec):
    """Tools `ask_about_image` and `describe_image` (sync and async) for any LlamaIndex agent.

    `image` is an http(s) URL (passed to the backend, not fetched here) or a data
    URI. Local file paths are accepted only with `allow_local_paths=True`, since the
    agent's LLM chooses the string. Backend choice as in `LlavaLLM`.
    """

    spec_functions: list[SPEC_FUNCTION_TYPE] = [  # noqa: RUF012 (BaseToolSpec declares it so)
        ("ask_about_image", "aask_about_image"),
        ("describe_image", "adescribe_image"),
    ]

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        model: str | None = None,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        allow_local_paths: bool = False,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        describe_prompt: str = DEFAULT_DESCRIBE_PROMPT,
    ) -> None:
        self.backend = resolve_backend(
            backend,
            model=model,
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
        )
        if isinstance(max_new_tokens, bool) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise ConfigurationError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT}.")
        if not describe_prompt.strip():
            raise ConfigurationError("describe_prompt is empty; give the question to ask about each image.")
        self.allow_local_paths = allow_local_paths
        self.max_new_tokens = max_new_tokens
        self.describe_prompt = describe_prompt

    def ask_about_image(self, image: str, question: str) -> str:
        """Answer a question about one image by looking at it.

        Args:
            image (str): The image: an http(s) URL, a data URI, or a local file path where allowed.
            question (str): What to find out about the image, as a full question.
        """
        return self.backend.generate(self._request(image, question)).text

    async def aask_about_image(self, image: str, question: str) -> str:
        """Answer a question about one image by looking at it.

        Args:
            image (str): The image: an http(s) URL, a data URI, or a local file path where allowed.
            question (str): What to find out about the image, as a full question.
        """
        request = await asyncio.to_thread(self._request, image, question)
        return (await self.backend.agenerate(request)).text

    def describe_image(self, image: str) -> str:
        """Describe what one image shows: subjects, colours, visible text and setting.

        Args:
            image (str): The image: an http(s) URL, a data URI, or a local file path where allowed.
        """
        return self.ask_about_image(image, self.describe_prompt)

    async def adescribe_image(self, image: str) -> str:
        """Describe what one image shows: subjects, colours, visible text and setting.

        Args:
            image (str): The image: an http(s) URL, a data URI, or a local file path where allowed.
        """
        return await self.aask_about_image(image, self.describe_prompt)

    def _request(self, image: Any, question: str) -> VisionRequest:
        picture = ImageInput.coerce(image, allow_paths=self.allow_local_paths)
        return VisionRequest(prompt=question, image=picture, max_new_tokens=self.max_new_tokens)

    def __repr__(self) -> str:
        return f"LlavaToolSpec(backend={self.backend!r}, allow_local_paths={self.allow_local_paths})"

"""`LlavaToolSpec`: LLaVA as agent tools that answer questions about an image.

No `from __future__ import annotations` here: LlamaIndex's `FunctionTool` finds the
`ctx: Context` parameter (and hands it the agent's workflow context) by its
evaluated annotation.
"""

import asyncio
from typing import Any

from llama_index.core.tools.tool_spec.base import SPEC_FUNCTION_TYPE, BaseToolSpec
from llama_index.core.workflow import Context
from pydantic import Field, SecretStr

from llava_bridge.backends.base import Backend
from llava_bridge.defaults import DETAILED_DESCRIBE_PROMPT
from llava_bridge.errors import ConfigurationError, InvalidImageError
from llava_bridge.images import ImageInput
from llava_bridge.llama_index._backend import DEFAULT_TIMEOUT, TimeoutSetting, resolve_backend
from llava_bridge.llama_index.conversation_images import choose_block, conversation_images, is_reference
from llava_bridge.llama_index.images import image_from_block
from llava_bridge.types import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS_LIMIT, VisionRequest

__all__ = ["DEFAULT_DESCRIBE_PROMPT", "LlavaToolSpec"]

DEFAULT_DESCRIBE_PROMPT = DETAILED_DESCRIBE_PROMPT

_AGENT_CONTEXT: Any = Field(default=None, description="The agent's workflow context (set by the agent).")
"""`FunctionTool` passes the agent's `Context` here and leaves it out of the tool's schema;
a pydantic default lets the tool be called outside an agent too."""

_SCHEMES = ("http://", "https://", "data:")


class LlavaToolSpec(BaseToolSpec):
    """Tools `ask_about_image` and `describe_image` (sync and async) for any LlamaIndex agent.

    In a `FunctionAgent` or `AgentWorkflow`, the tools read the image from the
    agent's conversation (its workflow `Context`): the model leaves `image` empty
    for the latest image the user sent, or gives "first" or an index (0 is the first
    image), so it never copies image data into a tool call. `image` may also be an http(s) URL
    (passed to the backend, not fetched here) or a data URI. Local file paths are
    accepted only with `allow_local_paths=True`, since the agent's LLM chooses the
    string. Outside an agent, `image` is required. Backend choice and the default
    deadline as in `LlavaLLM`.
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
        timeout: TimeoutSetting = DEFAULT_TIMEOUT,
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

    def ask_about_image(self, question: str, image: str | None = None, ctx: Context = _AGENT_CONTEXT) -> str:
        """Answer a question about an image by looking at it.

        Args:
            question (str): What to find out about the image, as a full question.
            image (str): Omit for the chat's latest image; or "first", an index from 0, or an http(s) URL.
        """
        if is_reference(image):
            if isinstance(ctx, Context):
                raise ConfigurationError(
                    "Reading an image from the agent's conversation needs the async tool "
                    "(FunctionTool.acall, as agents call it)."
                )
            raise self._no_conversation("ask_about_image")
        return self.backend.generate(self._request(self._coerce(image), question)).text

    async def aask_about_image(
        self, question: str, image: str | None = None, ctx: Context = _AGENT_CONTEXT
    ) -> str:
        """Answer a question about an image by looking at it.

        Args:
            question (str): What to find out about the image, as a full question.
            image (str): Omit for the chat's latest image; or "first", an index from 0, or an http(s) URL.
        """
        if is_reference(image):
            if not isinstance(ctx, Context):
                raise self._no_conversation("aask_about_image")
            block = choose_block(await conversation_images(ctx), image)
            picture = await asyncio.to_thread(image_from_block, block)
        else:
            picture = await asyncio.to_thread(self._coerce, image)
        return (await self.backend.agenerate(self._request(picture, question))).text

    def describe_image(self, image: str | None = None, ctx: Context = _AGENT_CONTEXT) -> str:
        """Describe what an image shows: subjects, colours, visible text and setting.

        Args:
            image (str): Omit for the chat's latest image; or "first", an index from 0, or an http(s) URL.
        """
        if is_reference(image) and not isinstance(ctx, Context):
            raise self._no_conversation("describe_image")
        return self.ask_about_image(self.describe_prompt, image, ctx)

    async def adescribe_image(self, image: str | None = None, ctx: Context = _AGENT_CONTEXT) -> str:
        """Describe what an image shows: subjects, colours, visible text and setting.

        Args:
            image (str): Omit for the chat's latest image; or "first", an index from 0, or an http(s) URL.
        """
        if is_reference(image) and not isinstance(ctx, Context):
            raise self._no_conversation("adescribe_image")
        return await self.aask_about_image(self.describe_prompt, image, ctx)

    def _coerce(self, image: Any) -> ImageInput:
        """An image named in the call; a string the tool cannot open gets advice for the agent."""
        if (
            isinstance(image, str)
            and not self.allow_local_paths
            and not image.strip().lower().startswith(_SCHEMES)
        ):
            raise InvalidImageError(
                f"{image[:60]!r} is not an image this tool can open: give an http(s) URL, or leave "
                "image empty to use the latest image in the conversation ('first' or an index for another)."
            )
        return ImageInput.coerce(image, allow_paths=self.allow_local_paths)

    def _request(self, picture: ImageInput, question: str) -> VisionRequest:
        return VisionRequest(prompt=question, image=picture, max_new_tokens=self.max_new_tokens)

    @staticmethod
    def _no_conversation(method: str) -> InvalidImageError:
        return InvalidImageError(
            f"{method}() got no image and has no agent conversation to take one from: pass image= "
            "(an http(s) URL or a data URI), or give the tool to a FunctionAgent or AgentWorkflow, "
            "which lets it read the images of the user's messages."
        )

    def __repr__(self) -> str:
        return f"LlavaToolSpec(backend={self.backend!r}, allow_local_paths={self.allow_local_paths})"

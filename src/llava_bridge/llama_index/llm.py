"""`LlavaLLM`: LLaVA as a LlamaIndex `LLM` that takes `ImageBlock`s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

from llama_index.core.base.llms.generic_utils import (
    astream_chat_response_to_completion_response,
    chat_response_to_completion_response,
    stream_chat_response_to_completion_response,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    ContentBlock,
    ImageBlock,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.llm import LLM
from llama_index.core.schema import BaseNode
from pydantic import SecretStr

from llava_bridge import retry
from llava_bridge.backends.base import Backend
from llava_bridge.llama_index._backend import (
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT,
    TimeoutSetting,
    default_timeout,
    ensure_picklable,
    resolve_backend,
    restore_with_backend,
)
from llava_bridge.llama_index.images import block_from_node
from llava_bridge.llama_index.messages import MultiImagePolicy, RequestSettings, to_vision_request
from llava_bridge.llama_index.responses import StreamAssembler, chat_response
from llava_bridge.types import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS_LIMIT, VisionRequest

__all__ = ["LlavaLLM"]

_CALL_SETTINGS = ("max_new_tokens", "temperature", "top_p", "stop", "multi_image")

DEFAULT_MAX_RETRIES = retry.MAX_ATTEMPTS - 1
"""The default backend's retries, as `FalBackend` counts them."""


class LlavaLLM(LLM):
    """LLaVA Llama3 8B as a LlamaIndex chat LLM; images travel as `ImageBlock`s.

    With no `backend=`, it calls fal (`FalBackend(model, api_key=..., base_url=...,
    timeout=..., max_retries=...)`; when no api_key= is given, `FAL_KEY` is used, for
    fal and `LLAVA_FAL_BASE_URL` only, never for a base_url= given in code). These
    settings are fields: `to_dict()`/`from_dict()` round-trip them (the key is never
    serialized) and an `IngestionCache` key of a component holding the LLM holds the
    model. `timeout` defaults to `DEFAULT_ADAPTER_TIMEOUT_S` (120 s), one deadline over
    the whole call that cancels the fal job when it runs out; `timeout=None` waits
    without limit. Any other backend (local GPU, OpenAI-compatible server,
    `FakeBackend`) goes in `backend=`; then `model` and `context_window` are read from
    it, and `from_dict` cannot rebuild it. Per call, `max_new_tokens`, `temperature`, `top_p`, `stop` and
    `multi_image` override the fields (other keyword arguments are ignored, as the
    framework passes some through). Usage is in `response.raw["usage"]`, mirrored
    in `additional_kwargs`, where `TokenCountingHandler` finds it. Merging, image
    choice, several images (2-4 tiled into one grid by default: the model sees one
    336-px square, so each image gets less of it) and text-only chats follow
    `llava_bridge.conversation`, as in LangChain. The backend trims the history to
    its context window (oldest turns first); when even the latest turn cannot fit,
    `ContextOverflowError` (a `ValueError`) is raised.

    LLaVA has no tool calling (`is_function_calling_model=False`): give it to agents
    as `LlavaToolSpec`, or use it inside a `ReActAgent`.
    """

    max_new_tokens: int = Field(
        default=DEFAULT_MAX_NEW_TOKENS, ge=1, le=MAX_NEW_TOKENS_LIMIT, description="Most tokens to generate."
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float | None = Field(default=None, ge=0.0, le=1.0, description="Nucleus sampling mass.")
    stop: list[str] = Field(default_factory=list, description="Strings that end the answer.")
    multi_image: MultiImagePolicy = Field(
        default="grid",
        description="Several images in one turn: 'grid' (2-4 tiled into one picture), 'first', "
        "'last' or 'error'.",
    )

    model: str = Field(
        default=DEFAULT_MODEL, description="The fal endpoint; with backend=, the backend's model."
    )
    base_url: str | None = Field(default=None, description="A fal-protocol server instead of fal.")
    api_key: SecretStr | None = Field(
        default=None, exclude=True, description="fal key; never serialized (FAL_KEY is used when None)."
    )
    timeout: float | None = Field(
        default_factory=default_timeout,
        description="Whole-call deadline in seconds; the job is cancelled when it runs out. "
        "None waits without limit. With backend=, the backend's own.",
    )
    max_retries: int | None = Field(
        default=DEFAULT_MAX_RETRIES, ge=0, description="Retries of a failed call; with backend=, None."
    )
    context_window: int = Field(
        default=0, ge=0, description="Tokens LlamaIndex plans prompts with; 0 means the backend's window."
    )

    _backend: Backend = PrivateAttr()

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        model: str | None = None,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        timeout: TimeoutSetting = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        context_window: int | None = None,
        **fields: Any,
    ) -> None:
        chosen = resolve_backend(
            backend,
            model=model,
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
        )
        default = backend is None
        super().__init__(
            model=chosen.model_name,
            base_url=base_url,
            api_key=api_key,
            timeout=getattr(chosen, "timeout", None),
            max_retries=(DEFAULT_MAX_RETRIES if max_retries is None else max_retries) if default else None,
            context_window=context_window or chosen.context_window,
            **fields,
        )
        self._backend = chosen

    @classmethod
    def class_name(cls) -> str:
        return "LlavaLLM"

    @property
    def backend(self) -> Backend:
        """The backend that answers."""
        return self._backend

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=False,
            model_name=self.model,
        )

    # -- the request (pure; reads a local file only for an ImageBlock(path=...)) ----------

    def _settings(self, overrides: dict[str, Any]) -> RequestSettings:
        values: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": self.stop,
            "multi_image": self.multi_image,
        }
        values.update({key: overrides[key] for key in _CALL_SETTINGS if key in overrides})
        stop = values["stop"]
        values["stop"] = (stop,) if isinstance(stop, str) else tuple(stop or ())
        return RequestSettings(**values)

    def _request(self, messages: Sequence[ChatMessage], overrides: dict[str, Any]) -> VisionRequest:
        return to_vision_request(messages, self._settings(overrides))  # the backend fits it

    async def _arequest(self, messages: Sequence[ChatMessage], overrides: dict[str, Any]) -> VisionRequest:
        # Off the event loop: a path block reads a file, and images are decoded to be checked.
        return await asyncio.to_thread(self._request, messages, overrides)

    # -- chat ---------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return chat_response(self._backend.generate(self._request(messages, kwargs)))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request = await self._arequest(messages, kwargs)
        return chat_response(await self._backend.agenerate(request))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        request = self._request(messages, kwargs)  # bad input fails here, before any chunk

        def responses() -> Generator[ChatResponse, None, None]:
            assembler = StreamAssembler()
            for chunk in self._backend.stream(request):
                yield assembler.feed(chunk)

        return responses()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        request = await self._arequest(messages, kwargs)

        async def responses() -> AsyncGenerator[ChatResponse, None]:
            assembler = StreamAssembler()
            async for chunk in self._backend.astream(request):
                yield assembler.feed(chunk)

        return responses()

    # -- completion: derived from chat; `image_documents=` for the older multimodal style --

    @llm_completion_callback()
    def complete(
        self,
        prompt: str,
        formatted: bool = False,
        image_documents: Sequence[BaseNode | ImageBlock] | None = None,
        **kwargs: Any,
    ) -> CompletionResponse:
        messages = _prompt_messages(prompt, image_documents)
        return chat_response_to_completion_response(self.chat(messages, **kwargs))

    @llm_completion_callback()
    async def acomplete(
        self,
        prompt: str,
        formatted: bool = False,
        image_documents: Sequence[BaseNode | ImageBlock] | None = None,
        **kwargs: Any,
    ) -> CompletionResponse:
        messages = _prompt_messages(prompt, image_documents)
        return chat_response_to_completion_response(await self.achat(messages, **kwargs))

    @llm_completion_callback()
    def stream_complete(
        self,
        prompt: str,
        formatted: bool = False,
        image_documents: Sequence[BaseNode | ImageBlock] | None = None,
        **kwargs: Any,
    ) -> CompletionResponseGen:
        messages = _prompt_messages(prompt, image_documents)
        return stream_chat_response_to_completion_response(self.stream_chat(messages, **kwargs))

    @llm_completion_callback()
    async def astream_complete(
        self,
        prompt: str,
        formatted: bool = False,
        image_documents: Sequence[BaseNode | ImageBlock] | None = None,
        **kwargs: Any,
    ) -> CompletionResponseAsyncGen:
        messages = _prompt_messages(prompt, image_documents)
        return astream_chat_response_to_completion_response(await self.astream_chat(messages, **kwargs))

    # -- pickling keeps the backend (BaseComponent would silently drop it) ----------------

    def __getstate__(self) -> dict[Any, Any]:
        ensure_picklable(self._backend, "LlavaLLM")
        return super().__getstate__()

    def __setstate__(self, state: dict[Any, Any]) -> None:
        restore_with_backend(self, state)


def _prompt_messages(
    prompt: str, image_documents: Sequence[BaseNode | ImageBlock] | None
) -> list[ChatMessage]:
    blocks: list[ContentBlock] = [block_from_node(document) for document in image_documents or ()]
    blocks.append(TextBlock(text=prompt))
    return [ChatMessage(role=MessageRole.USER, blocks=blocks)]

"""`ChatLlava`: LLaVA Llama3 as a LangChain chat model that takes images."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.load.serializable import SerializedConstructor, SerializedNotImplemented
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.runnables.retry import ExponentialJitterParams
from langchain_core.tools import BaseTool
from pydantic import (
    AliasChoices,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from llava_bridge._version import __version__
from llava_bridge.backends.base import Backend
from llava_bridge.defaults import DEFAULT_ENDPOINT
from llava_bridge.langchain import settings
from llava_bridge.langchain._backend import check_backend, lazy_backend, provider_name
from llava_bridge.langchain.errors import is_retryable, translated_errors
from llava_bridge.langchain.messages import MultiImagePolicy, TextOnlyPolicy, messages_to_request
from llava_bridge.langchain.structured import structured_runnable
from llava_bridge.prompts import CONTEXT_WINDOW, IMAGE_TOKENS, PROMPT_OVERHEAD_TOKENS, TURN_OVERHEAD_TOKENS
from llava_bridge.types import (
    DEFAULT_MAX_NEW_TOKENS,
    MAX_NEW_TOKENS_LIMIT,
    VisionRequest,
    VisionResult,
)

__all__ = ["DEFAULT_MODEL", "ChatLlava"]

DEFAULT_MODEL = DEFAULT_ENDPOINT
_CALL_OPTIONS = frozenset(
    {"model", "max_tokens", "max_new_tokens", "temperature", "top_p", "json_instructions", "stream"}
)


@dataclass(frozen=True)
class _Call:
    """One call, ready to send: the request (the backend fits it to its context) and the backend."""

    request: VisionRequest
    backend: Backend


class ChatLlava(BaseChatModel):
    """LLaVA Llama3 8B (on fal, your GPU, or any llava-bridge backend) as a chat model.

    Setup: from a clone of the repository, ``pip install -e ".[langchain]"``; set
    ``FAL_KEY`` (or pass ``api_key=``), or pass ``backend=`` (e.g. ``FakeBackend()`` offline).

    Messages may hold text and images: v1 ``image`` blocks (``url``, or ``base64``
    with ``mime_type``), OpenAI ``image_url`` blocks and legacy ``source_type``
    blocks. LLaVA takes one image per request: the one of the latest human turn
    that has one; 2-4 images there are tiled into one grid by default (the model
    sees one 336-px square, so each image gets less of it; see ``multi_image``).
    Merging, image choice and text-only chats follow ``llava_bridge.conversation``,
    as in LlamaIndex. The backend trims the history, oldest turns first, to fit its
    context (``response_metadata["dropped_turns"]`` counts them); when even the
    latest turn cannot fit, LangChain's ``ContextOverflowError`` is raised. Stop
    sequences are applied by the backend, on the client. There is no tool calling
    (see ``LlavaImageTool`` for agents); ``with_structured_output`` works by JSON
    instructions in the prompt plus parsing.

    Settings are checked when the model is built: an unknown argument raises
    ``ConfigurationError`` naming the closest one (``max_token`` -> ``max_tokens``);
    the partners' names are aliases (``model_name``, ``max_new_tokens``,
    ``request_timeout``, ``stop_sequences``); ``timeout``, ``max_retries``, ``api_key``
    or ``base_url`` next to ``backend=`` raise (set them on that backend). The default
    FalBackend has a whole-call deadline, ``timeout`` (120 s unless given), and cancels
    the job when it runs out. ``dumpd``/``load`` round-trip the settings, the key as a
    reference to ``FAL_KEY``; ``with_retry()`` retries only errors that can succeed.

    Example:
        .. code-block:: python

            from langchain_core.messages import HumanMessage
            from llava_bridge.langchain import ChatLlava

            llm = ChatLlava(max_tokens=128)
            llm.invoke([HumanMessage(content=[
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image", "url": "https://example.com/cat.jpg"},
            ])])
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    model: str = Field(default=DEFAULT_MODEL, validation_alias=AliasChoices("model", "model_name"))
    """fal endpoint id or model name (also `model_name=`); the backend's own model when `backend` is given."""
    max_tokens: int = Field(
        default=DEFAULT_MAX_NEW_TOKENS,
        validation_alias=AliasChoices("max_tokens", "max_new_tokens"),
        ge=1,
        le=MAX_NEW_TOKENS_LIMIT,
    )
    """Most tokens to generate (also `max_new_tokens=`)."""
    temperature: float | None = None
    """Sampling temperature, 0 to 2 (None: the endpoint's default)."""
    top_p: float | None = None
    """Nucleus sampling, above 0 and at most 1 (None: the endpoint's default)."""
    stop: list[str] | None = Field(default=None, validation_alias=AliasChoices("stop", "stop_sequences"))
    """Stop sequences (also `stop_sequences=`), applied on the client: the answer is cut before the first."""
    timeout: float | None = Field(default=None, validation_alias=AliasChoices("timeout", "request_timeout"))
    """Whole-call deadline in seconds of the default FalBackend (also `request_timeout=`); the job is
    cancelled when it runs out. Defaults to `DEFAULT_ADAPTER_TIMEOUT_S` (120 s); `None`: no limit."""
    max_retries: int | None = None
    """Retries of transient failures by the default FalBackend (None: its default). Set 0 when you
    wrap the model in `with_retry()` or `ModelRetryMiddleware`, so attempts do not multiply."""
    api_key: SecretStr | None = None
    """fal key; when None the default FalBackend uses FAL_KEY, for fal and LLAVA_FAL_BASE_URL only."""
    base_url: str | None = None
    """Point the default FalBackend at another fal-compatible server (e.g. `llava-bridge serve`)."""
    backend: Any = Field(default=None, exclude=True)
    """Any llava-bridge backend; a FalBackend built from the fields above when None."""
    streaming: bool = False
    multi_image: MultiImagePolicy = "grid"
    """Several images in the latest human turn with images: 'grid' (2-4 tiled into one picture),
    'first', 'last' or 'error'."""
    text_only: TextOnlyPolicy = "allow"
    """A conversation with no image: 'allow' (fal gets a neutral placeholder image) or 'error'."""

    _default_backend: Backend | None = PrivateAttr(default=None)
    _backend_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, **kwargs: Any) -> None:
        """Build from keyword settings; unknown or conflicting ones raise `ConfigurationError`."""
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            if (error := settings.llava_error_inside(exc)) is not None:
                raise error from None
            raise

    @model_validator(mode="before")
    @classmethod
    def _check_settings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = settings.accepted_names(cls)
        settings.check_unknown(cls.__name__, data, names)
        settings.check_backend_conflicts(cls.__name__, data, names)
        settings.check_sampling(data, names)
        return settings.default_deadline(data, names)

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, value: Any) -> Any:
        return check_backend(value)

    @model_validator(mode="after")
    def _model_from_backend(self) -> ChatLlava:
        if self.backend is not None and "model" not in self.model_fields_set:
            self.model = self.backend.model_name
        return self

    @model_validator(mode="after")
    def _set_llava_bridge_version(self) -> ChatLlava:
        add_version = getattr(self, "_add_version", None)  # langchain-core >= 1.3
        if add_version is not None:
            add_version("llava-bridge", __version__)
        return self

    @property
    def model_name(self) -> str:
        """The model (fal endpoint id or the backend's model), as partner chat models name it."""
        return self.model

    # -- identity ------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "llava-chat"

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"api_key": "FAL_KEY"}

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """True: `dumpd`/`load` round-trip the settings; the key is written as a reference to FAL_KEY."""
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["llava_bridge", "langchain", "chat_models"]

    @property
    def lc_attributes(self) -> dict[str, Any]:
        # An explicit timeout=None (no deadline) must survive a round trip, not become the default.
        return {"timeout": None} if self.timeout is None else {}

    def to_json(self) -> SerializedConstructor | SerializedNotImplemented:
        """The settings as LangChain's serialized form; a model with `backend=` cannot be revived."""
        if self.backend is not None:
            return self.to_json_not_implemented()
        return super().to_json()

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": self.stop,
            "provider": provider_name(self.backend),
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=provider_name(self.backend),
            ls_model_name=kwargs.get("model") or self.model,
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens") or kwargs.get("max_new_tokens") or self.max_tokens,
        )
        if stops := stop or self.stop:
            params["ls_stop"] = list(stops)
        return params

    def _resolve_model_profile(self) -> ModelProfile | None:
        context = self.backend.context_window if self.backend is not None else CONTEXT_WINDOW
        return ModelProfile(
            max_input_tokens=context,
            max_output_tokens=MAX_NEW_TOKENS_LIMIT,
            text_inputs=True,
            image_inputs=True,
            image_url_inputs=True,
            pdf_inputs=False,
            audio_inputs=False,
            video_inputs=False,
            text_outputs=True,
            tool_calling=False,
            structured_output=True,
        )

    # -- building a request ----------------------------------------------------------

    def get_backend(self) -> Backend:
        """The backend calls go to (the default FalBackend is made on first use)."""
        return lazy_backend(self)

    def to_request(
        self, messages: Sequence[BaseMessage], stop: list[str] | None = None, **kwargs: Any
    ) -> VisionRequest:
        """The core `VisionRequest` these messages and call options make (the backend trims it)."""
        unknown = set(kwargs) - _CALL_OPTIONS
        if unknown:
            raise TypeError(
                f"ChatLlava got unknown call option(s) {', '.join(sorted(unknown))}; it takes "
                "model, max_tokens, temperature, top_p and stop."
            )
        request = messages_to_request(
            messages,
            max_new_tokens=kwargs.get("max_tokens") or kwargs.get("max_new_tokens") or self.max_tokens,
            temperature=kwargs.get("temperature", self.temperature),
            top_p=kwargs.get("top_p", self.top_p),
            stop=stop if stop is not None else self.stop,
            model=kwargs.get("model") or self.model,
            multi_image=self.multi_image,
            text_only=self.text_only,
        )
        instructions = kwargs.get("json_instructions")
        if instructions:
            latest = request.messages[-1]
            amended = latest.model_copy(update={"content": f"{latest.content}\n\n{instructions}"})
            request = request.model_copy(update={"messages": (*request.messages[:-1], amended)})
        return request

    def _prepare(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> _Call:
        return _Call(self.to_request(messages, stop, **kwargs), self.get_backend())

    # -- calls ---------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with translated_errors():
            call = self._prepare(messages, stop, kwargs)
            return _chat_result(call, call.backend.generate(call.request))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with translated_errors():
            call = await asyncio.to_thread(self._prepare, messages, stop, kwargs)
            return _chat_result(call, await call.backend.agenerate(call.request))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        with translated_errors():
            call = self._prepare(messages, stop, kwargs)
            assembler = _StreamAssembler(call)
            stream = call.backend.stream(call.request)
            try:
                for piece in stream:
                    for chunk in assembler.feed(piece.delta, piece.result):
                        if run_manager:
                            run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                        yield chunk
                    if assembler.done:
                        break
                yield from assembler.finish()
            finally:
                close: Callable[[], None] | None = getattr(stream, "close", None)
                if close is not None:
                    close()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        with translated_errors():
            call = await asyncio.to_thread(self._prepare, messages, stop, kwargs)
            assembler = _StreamAssembler(call)
            stream = call.backend.astream(call.request)
            try:
                async for piece in stream:
                    for chunk in assembler.feed(piece.delta, piece.result):
                        if run_manager:
                            await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                        yield chunk
                    if assembler.done:
                        break
                for chunk in assembler.finish():
                    yield chunk
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()

    # -- tokens ---------------------------------------------------------------------------

    def get_num_tokens(self, text: str) -> int:
        """Tokens `text` takes, counted by the backend (exact locally, estimated for fal)."""
        return self.get_backend().count_tokens(text)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Prompt tokens these messages take, with the image's 576 and the template's overhead."""
        if tools:
            raise NotImplementedError("LLaVA has no tool calling, so tools take no tokens here.")
        request = self.to_request(messages)
        count = self.get_backend().count_tokens
        text = sum(count(m.content) + TURN_OVERHEAD_TOKENS for m in request.messages)
        return text + PROMPT_OVERHEAD_TOKENS + (IMAGE_TOKENS if request.image is not None else 0)

    # -- retries, tools and structured output ---------------------------------------------

    def with_retry(
        self,
        *,
        retry_if_exception_type: tuple[type[BaseException], ...] | Callable[[BaseException], bool] = (
            is_retryable
        ),
        wait_exponential_jitter: bool = True,
        exponential_jitter_params: ExponentialJitterParams | None = None,
        stop_after_attempt: int = 3,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """LangChain's `with_retry`, retrying by default only errors that can succeed next time.

        `is_retryable` decides: a timeout, a dropped connection, 429 or 5xx is retried; an
        `InvalidImageError`, a bad request or a rejected key is raised at once. The default
        FalBackend already retries transient failures itself, so set `max_retries=0` on this
        model when you wrap it, or attempts multiply (3 x 5).
        """
        return super().with_retry(
            retry_if_exception_type=retry_if_exception_type,
            wait_exponential_jitter=wait_exponential_jitter,
            exponential_jitter_params=exponential_jitter_params,
            stop_after_attempt=stop_after_attempt,
        )

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """LLaVA has no tool calling: this always raises NotImplementedError."""
        raise NotImplementedError(
            "LLaVA has no tool calling, so ChatLlava cannot bind tools. To let an agent look at "
            "images, give a tool-calling model llava_bridge.langchain.LlavaImageTool; for JSON "
            "answers use with_structured_output(schema, method='json_schema')."
        )

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["json_schema", "json_mode", "function_calling"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Answers parsed into `schema` (pydantic class, TypedDict or JSON schema).

        The schema (json_schema) or a request for a JSON object (json_mode) is added to
        the latest human turn, and the answer is parsed. `function_calling` is handled
        as `json_schema`, since LLaVA has no tools; `strict` is accepted and ignored.
        """
        if kwargs:
            raise TypeError(f"Unknown argument(s) {', '.join(sorted(kwargs))} for with_structured_output.")
        return structured_runnable(self, schema, method=method, include_raw=include_raw)


# -- turning results into LangChain messages ------------------------------------------------


def _usage(call: _Call, result: VisionResult | None, text: str) -> tuple[UsageMetadata, bool]:
    """Usage from the backend when it knows it, else an estimate of the answer; and whether estimated."""
    if result is not None and (result.usage.prompt_tokens or result.usage.completion_tokens):
        prompt, completion = result.usage.prompt_tokens, result.usage.completion_tokens
        estimated = result.usage.estimated
    else:
        prompt, completion, estimated = 0, call.backend.count_tokens(text), True
    usage = UsageMetadata(input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion)
    return usage, estimated


def _metadata(call: _Call, result: VisionResult | None, estimated: bool) -> dict[str, Any]:
    return {
        "model_name": (result.model if result else None) or call.request.model or call.backend.model_name,
        "model_provider": "llava",
        "finish_reason": result.finish_reason if result else None,
        "request_id": result.request_id if result else None,
        "metrics": dict(result.metrics) if result else {},
        "usage_estimated": estimated,
        "dropped_turns": result.usage.dropped_turns if result else 0,
    }


def _chat_result(call: _Call, result: VisionResult) -> ChatResult:
    usage, estimated = _usage(call, result, result.text)
    message = AIMessage(
        content=result.text,
        usage_metadata=usage,
        response_metadata=_metadata(call, result, estimated),
    )
    return ChatResult(generations=[ChatGeneration(message=message)])


class _StreamAssembler:
    """Turns backend deltas (stops already cut by the backend) into chunks; metadata rides the last."""

    def __init__(self, call: _Call) -> None:
        self._call = call
        self._texts: list[str] = []
        self.done = False

    def feed(self, delta: str, result: VisionResult | None) -> Iterator[ChatGenerationChunk]:
        if result is None:
            if delta:
                self._texts.append(delta)
                yield ChatGenerationChunk(message=AIMessageChunk(content=delta))
            return
        yield self._last(delta, result)

    def finish(self) -> Iterator[ChatGenerationChunk]:
        """The last chunk, when the stream ended without a result."""
        if not self.done:
            yield self._last("", None)

    def _last(self, text: str, result: VisionResult | None) -> ChatGenerationChunk:
        self.done = True
        self._texts.append(text)
        usage, estimated = _usage(self._call, result, "".join(self._texts))
        message = AIMessageChunk(
            content=text,
            usage_metadata=usage,
            response_metadata=_metadata(self._call, result, estimated),
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)

"""`LlavaImageTool`: a tool an agent calls to ask LLaVA a question about one image."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.tools import BaseTool, InjectedToolArg, ToolException
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

from llava_bridge import errors
from llava_bridge.backends.base import Backend
from llava_bridge.images import ImageInput
from llava_bridge.langchain import settings
from llava_bridge.langchain._backend import check_backend, lazy_backend
from llava_bridge.langchain.conversation_images import (
    ImageReference,
    NoConversationImageError,
    conversation_image_blocks,
    parse_reference,
    pick_image_block,
    state_messages,
)
from llava_bridge.langchain.messages import image_from_block
from llava_bridge.types import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS_LIMIT, VisionRequest, VisionResult

__all__ = ["LlavaImageInput", "LlavaImageTool"]

_IMAGE_FORMS = "an http(s) URL or a data:image/...;base64 URI of a JPEG, PNG, WebP, GIF or BMP image"
_FROM_CONVERSATION = (
    "Omit image to use the latest image in the conversation, or give its index (0 = first, -1 = latest)."
)
_NO_CONVERSATION = (
    "LlavaImageTool was called without an image outside an agent, so there is no conversation to "
    "take one from. Pass image= (an http(s) URL or a data: URI), or give the tool to create_agent "
    "or LangGraph's ToolNode, which hand it the conversation."
)


class LlavaImageInput(BaseModel):
    """Arguments of `LlavaImageTool`; `runtime` is injected by LangGraph's ToolNode, never by the model."""

    question: str = Field(description="What to ask about the image, e.g. 'How many people are in it?'")
    image: str | int | None = Field(
        default=None,
        description=f"The image: {_IMAGE_FORMS} (or a local file path, if the tool allows it). "
        + _FROM_CONVERSATION,
    )
    runtime: Annotated[Any, InjectedToolArg] = Field(default=None, exclude=True)
    """The agent's state and context (LangGraph's ToolRuntime): where conversation images are read."""


class LlavaImageTool(BaseTool):
    """Ask LLaVA Llama3 a question about one image; for agents whose own model cannot see.

    Returns the answer as the tool's content and, as its artifact, a dict with the
    model, request id, usage and finish reason. Problems an agent can act on (a URL
    the server cannot fetch, bytes that are not an image, an image that is too
    large, a busy server) come back as tool errors with advice; configuration
    problems (no API key, unknown endpoint) are raised to the developer.

    Local paths are read only with ``allow_local_paths=True``: the agent then
    chooses which files are read, so enable it only for trusted agents.

    Inside ``create_agent`` or LangGraph's ToolNode, the agent's model may omit
    ``image`` (the latest image of the conversation's human messages) or give
    "latest", "first" or an index (0 = first, -1 = latest): ToolNode injects the
    agent's state as the hidden ``runtime`` argument and the image is read from it,
    so no image data travels in the tool call. The artifact's ``image`` then says
    which one ("conversation image 2 of 2"). The default FalBackend has a whole-call
    deadline, ``timeout`` (120 s unless given); the job is cancelled when it runs out.

    Example:
        .. code-block:: python

            from langchain.agents import create_agent
            from llava_bridge.langchain import LlavaImageTool

            agent = create_agent("openai:gpt-4.1-mini", tools=[LlavaImageTool()])
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "ask_about_image"
    description: str = (
        "Look at one image and answer a question about it (LLaVA vision model). "
        f"Arguments: question (one clear question) and image ({_IMAGE_FORMS}). "
        f"{_FROM_CONVERSATION} Returns the model's answer as text."
    )
    args_schema: type[BaseModel] = LlavaImageInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: Any = True

    model: str | None = None
    """fal endpoint id or model name (None: the backend's default)."""
    api_key: SecretStr | None = None
    """fal key; when None the default FalBackend uses FAL_KEY, for fal and LLAVA_FAL_BASE_URL only."""
    base_url: str | None = None
    timeout: float | None = None
    """Whole-call deadline in seconds of the default FalBackend; the job is cancelled when it runs
    out. Defaults to `DEFAULT_ADAPTER_TIMEOUT_S` (120 s); `None`: no limit."""
    max_retries: int | None = None
    backend: Any = Field(default=None, exclude=True)
    """Any llava-bridge backend; a FalBackend built from the fields above when None."""
    max_new_tokens: int = Field(default=DEFAULT_MAX_NEW_TOKENS, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    allow_local_paths: bool = False
    """Let `image` be a local file path (the agent then decides which files are read)."""

    _default_backend: Backend | None = PrivateAttr(default=None)
    _backend_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="before")
    @classmethod
    def _deadline_and_conflicts(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = settings.accepted_names(cls)
        settings.check_backend_conflicts(cls.__name__, data, names)
        return settings.default_deadline(data, names)

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, value: Any) -> Any:
        return check_backend(value)

    def get_backend(self) -> Backend:
        """The backend questions go to (the default FalBackend is made on first use)."""
        return lazy_backend(self)

    def _run(
        self,
        question: str,
        image: str | int | None = None,
        runtime: Annotated[Any, InjectedToolArg] = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, dict[str, Any]]:
        reference = _reference(image, runtime)
        with _agent_errors():
            request, label = self._request(reference, question, runtime)
            return _answer(self.get_backend().generate(request), label)

    async def _arun(
        self,
        question: str,
        image: str | int | None = None,
        runtime: Annotated[Any, InjectedToolArg] = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, dict[str, Any]]:
        reference = _reference(image, runtime)
        with _agent_errors():
            request, label = await asyncio.to_thread(self._request, reference, question, runtime)
            return _answer(await self.get_backend().agenerate(request), label)

    def _request(
        self, reference: ImageReference | str, question: str, runtime: Any = None
    ) -> tuple[VisionRequest, str]:
        """The request, and a label for the image (its source, or which conversation image)."""
        if isinstance(reference, ImageReference):
            blocks = conversation_image_blocks(state_messages(getattr(runtime, "state", None)))
            try:
                block, label = pick_image_block(blocks, reference)
            except NoConversationImageError as exc:
                raise ToolException(str(exc)) from None
            image = image_from_block(block, 0)
        else:
            image = ImageInput.coerce(reference, allow_paths=self.allow_local_paths)
            label = image.source
        request = VisionRequest(
            prompt=question, image=image, max_new_tokens=self.max_new_tokens, model=self.model
        )
        return request, label


def _reference(image: str | int | None, runtime: Any) -> ImageReference | str:
    """What `image` names; an omitted image outside an agent is the developer's error, raised."""
    reference = parse_reference(image)
    if isinstance(reference, ImageReference) and runtime is None:
        raise errors.InvalidRequestError(_NO_CONVERSATION)
    return reference


def _answer(result: VisionResult, label: str) -> tuple[str, dict[str, Any]]:
    usage = result.usage
    artifact = {
        "model": result.model,
        "request_id": result.request_id,
        "finish_reason": result.finish_reason,
        "usage": {
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "estimated": usage.estimated,
        },
        "image": label,
    }
    return result.text, artifact


@contextmanager
def _agent_errors() -> Iterator[None]:
    """Turn failures an agent can act on into ToolExceptions with advice; re-raise the rest."""
    try:
        yield
    except errors.InvalidImageError as exc:
        problem = str(exc).split(". ")[0].rstrip(".")
        raise ToolException(f"The image cannot be used: {problem}. The tool takes {_IMAGE_FORMS}.") from exc
    except errors.ContextOverflowError as exc:
        raise ToolException(f"The question is too long for the model: {exc}") from exc
    except errors.InvalidRequestError as exc:
        raise ToolException(f"The request is invalid: {exc}") from exc
    except (errors.UnprocessableEntityError, errors.BadRequestError, errors.JobFailedError) as exc:
        raise ToolException(
            f"The model server could not use this image: {exc}\nThe URL may be unreachable, "
            "private, or not point at an image. Check that it is public and links directly to an "
            "image file, or send the image as a data: URI."
        ) from exc
    except errors.AmbiguousSubmitError as exc:
        raise ToolException(
            f"The vision request may still be running ({exc}). Do not ask the same question again "
            "right away; go on without the answer or ask about something else."
        ) from exc
    except (
        errors.APIConnectionError,
        errors.RateLimitError,
        errors.ServerError,
        errors.DeadlineExceededError,
    ) as exc:
        raise ToolException(
            f"The vision model is unavailable right now ({exc}). Try again in a minute, or go on without it."
        ) from exc

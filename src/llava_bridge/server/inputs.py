"""The endpoint's input and output schema, and errors as fal-shaped HTTP answers.

Input mirrors fal's LLaVA endpoints: `image_url` (an http(s) URL or a data: URI),
`prompt`, `max_new_tokens` (`max_tokens` is accepted as its alias, as sibling
endpoints name it), and optional `temperature`, `top_p` and `stop`. Output is
`{"output": text, "partial": false}` plus `finish_reason` and `usage`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llava_bridge.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ContextOverflowError,
    InvalidImageError,
    InvalidRequestError,
    LlavaError,
)
from llava_bridge.images import ImageInput
from llava_bridge.types import (
    DEFAULT_MAX_NEW_TOKENS,
    MAX_NEW_TOKENS_LIMIT,
    MAX_PROMPT_CHARS,
    VisionRequest,
    VisionResult,
)

__all__ = [
    "LlavaInput",
    "LlavaOutput",
    "ErrorAnswer",
    "error_answer",
    "output_body",
    "to_vision_request",
    "validation_detail",
    "validation_message",
]


class LlavaInput(BaseModel):
    """The request body of every served endpoint."""

    model_config = ConfigDict(extra="ignore")

    image_url: str = Field(description="The image: an http(s) URL, a data: URI, or a URL this server stored.")
    prompt: str = Field(max_length=MAX_PROMPT_CHARS, description="What to ask about the image.")
    max_new_tokens: int | None = Field(
        default=None,
        strict=True,  # true, "5" and 5.0 are refused, as VisionRequest refuses them
        ge=1,
        le=MAX_NEW_TOKENS_LIMIT,
        description=f"Longest answer (default {DEFAULT_MAX_NEW_TOKENS}).",
    )
    max_tokens: int | None = Field(
        default=None, strict=True, ge=1, le=MAX_NEW_TOKENS_LIMIT, description="Alias of max_new_tokens."
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    stop: list[str] | None = Field(default=None, max_length=16, description="Strings that end the answer.")


class LlavaOutput(BaseModel):
    """The result body of a successful job."""

    output: str
    partial: bool = False
    finish_reason: str | None = None
    usage: dict[str, int] | None = None


def to_vision_request(arguments: LlavaInput, image: ImageInput | None) -> VisionRequest:
    """The backend request for validated input; InvalidRequestError when it is not usable."""
    try:
        return VisionRequest(
            prompt=arguments.prompt,
            image=image,
            max_new_tokens=arguments.max_new_tokens or arguments.max_tokens or DEFAULT_MAX_NEW_TOKENS,
            temperature=arguments.temperature,
            top_p=arguments.top_p,
            stop=tuple(arguments.stop or ()),
        )
    except ValidationError as exc:
        messages = "; ".join(
            str(error.get("msg", "")).removeprefix("Value error, ") for error in exc.errors()
        )
        raise InvalidRequestError(messages) from None


def output_body(result: VisionResult) -> dict[str, Any]:
    usage = {"prompt_tokens": result.usage.prompt_tokens, "completion_tokens": result.usage.completion_tokens}
    return LlavaOutput(output=result.text, finish_reason=result.finish_reason, usage=usage).model_dump()


ErrorAnswer = tuple[int, dict[str, Any]]


def validation_detail(field: str, message: str, kind: str) -> dict[str, Any]:
    """fal's 422 body: a FastAPI-style list with one error, and a readable `message`."""
    errors = [{"loc": ["body", field], "msg": message, "type": kind}]
    return {"detail": errors, "message": validation_message(errors)}


def validation_message(errors: list[dict[str, Any]]) -> str:
    """One readable line for a 422's error list (fal's JavaScript client shows `message`).

    Each error reads `field: what is wrong`, e.g. ``max_new_tokens: Input should be a valid integer``.
    """
    parts = []
    for error in errors:
        where = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
        text = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{'.'.join(where)}: {text}" if where else text)
    return "; ".join(parts) or "The request is not valid."


def error_answer(exc: BaseException) -> ErrorAnswer:
    """The HTTP status and body a failure becomes, in fal's shapes."""
    if isinstance(exc, InvalidImageError):
        return 422, validation_detail("image_url", str(exc), "image_load_error")
    if isinstance(exc, ContextOverflowError):
        return 422, validation_detail("prompt", str(exc), "context_overflow")
    if isinstance(exc, (InvalidRequestError, ValidationError)):
        return 422, validation_detail("prompt", str(exc), "value_error")
    if isinstance(exc, APIStatusError):
        if exc.status_code in (400, 413, 422):
            return 422, validation_detail("prompt", str(exc), "value_error")
        return 502, {"detail": f"The model server failed: {exc}", "error_type": "runner_server_error"}
    if isinstance(exc, APITimeoutError):
        return 504, {
            "detail": f"The model server timed out: {exc}",
            "error_type": "runner_connection_timeout",
        }
    if isinstance(exc, APIConnectionError):
        return 503, {
            "detail": f"Cannot reach the model server: {exc}",
            "error_type": "runner_connection_error",
        }
    if isinstance(exc, LlavaError):
        return 500, {"detail": f"The model failed: {exc}", "error_type": "runner_server_error"}
    return 500, {
        "detail": f"The model failed: {type(exc).__name__}: {exc}",
        "error_type": "runner_server_error",
    }

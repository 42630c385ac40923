"""The request and result values every backend speaks."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llava_bridge.errors import InvalidPromptError, InvalidRequestError
from llava_bridge.images import ImageInput

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "MAX_NEW_TOKENS_LIMIT",
    "MAX_PROMPT_CHARS",
    "FinishReason",
    "Message",
    "Role",
    "Usage",
    "VisionChunk",
    "VisionRequest",
    "VisionResult",
]

DEFAULT_MAX_NEW_TOKENS = 256
MAX_NEW_TOKENS_LIMIT = 4096
"""The model was trained on 4,096 tokens in all; no answer can be longer."""
MAX_PROMPT_CHARS = 200_000
"""A latest message or system prompt longer than this cannot fit any LLaVA context; refused
before sending. Older turns have no cap: they are trimmed to fit (`prompts.fit_to_context`)."""

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length"]


class Message(BaseModel):
    """One turn of a conversation, as text."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str


class VisionRequest(BaseModel):
    """What to ask: a conversation (or one prompt), at most one image, and settings.

    `VisionRequest(prompt="What is this?", image=img)` is short for a one-turn
    conversation. The image belongs to the user turn at `image_turn` (default: the
    latest user turn).
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    messages: tuple[Message, ...]
    image: ImageInput | None = None
    image_turn: int | None = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    model: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _typed_error(exc) from None

    @model_validator(mode="before")
    @classmethod
    def _prompt_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "prompt" in data:
            data = dict(data)
            prompt = data.pop("prompt")
            if "messages" in data:
                raise InvalidRequestError("Give either prompt= or messages=, not both.")
            if not isinstance(prompt, str):
                raise InvalidPromptError(f"prompt must be a string, not {type(prompt).__name__}.")
            data["messages"] = (Message(role="user", content=prompt),)
        image = data.get("image") if isinstance(data, dict) else None
        if image is not None and not isinstance(image, ImageInput):
            data = dict(data)
            data["image"] = ImageInput.coerce(image)
        return data

    @field_validator("max_new_tokens", mode="before")
    @classmethod
    def _check_max_new_tokens(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidPromptError(
                f"max_new_tokens must be an integer, not {type(value).__name__} {value!r}."
            )
        if not 1 <= value <= MAX_NEW_TOKENS_LIMIT:
            raise InvalidPromptError(
                f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT}, not {value}."
            )
        return value

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _check_sampling(cls, value: Any, info: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidPromptError(f"{info.field_name} must be a finite number, not {value!r}.")
        upper = 2.0 if info.field_name == "temperature" else 1.0
        if not 0.0 <= value <= upper:
            raise InvalidPromptError(f"{info.field_name} must be between 0 and {upper:g}, not {value}.")
        return float(value)

    @field_validator("stop", mode="before")
    @classmethod
    def _check_stop(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = (value,)
        stops = tuple(value)
        if any(not isinstance(s, str) or not s for s in stops):
            raise InvalidPromptError("stop must be a list of non-empty strings.")
        return stops

    @model_validator(mode="after")
    def _check_messages(self) -> VisionRequest:
        if not self.messages:
            raise InvalidPromptError("The conversation is empty; give a prompt.")
        if self.messages[-1].role != "user":
            raise InvalidPromptError(
                f"The last message must be the user's, not the {self.messages[-1].role}'s."
            )
        if not self.messages[-1].content.strip():
            raise InvalidPromptError(
                "The prompt is empty or whitespace; ask something (e.g. 'Describe this image.')."
            )
        for text in (*(m.content for m in self.messages), *self.stop):
            _check_unicode(text)
        last = len(self.messages) - 1
        for index, message in enumerate(self.messages):  # the turns trimming always keeps
            if (index == last or message.role == "system") and len(message.content) > MAX_PROMPT_CHARS:
                which = "latest message" if index == last else f"system prompt (turn {index})"
                raise InvalidPromptError(
                    f"The {which} is {len(message.content):,} characters, over the "
                    f"{MAX_PROMPT_CHARS:,} no LLaVA context can hold; shorten it."
                )
        if self.image_turn is not None:
            if not 0 <= self.image_turn < len(self.messages):
                raise InvalidRequestError(f"image_turn {self.image_turn} is outside the conversation.")
            if self.messages[self.image_turn].role != "user":
                raise InvalidRequestError("image_turn must point at a user turn.")
        return self

    @property
    def prompt(self) -> str:
        """The latest user turn's text."""
        return self.messages[-1].content

    @property
    def image_index(self) -> int | None:
        """Index of the turn that holds the image (None without an image)."""
        if self.image is None:
            return None
        if self.image_turn is not None:
            return self.image_turn
        return max(i for i, m in enumerate(self.messages) if m.role == "user")


def _check_unicode(text: str) -> None:
    """Refuse text that cannot be sent as UTF-8 (a lone surrogate, e.g. from undecodable bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidPromptError(
            f"The text holds {text[exc.start]!r} at position {exc.start}, which is not valid Unicode "
            "(undecodable bytes read with errors='surrogateescape'?); decode it with errors='replace'."
        ) from None


def _typed_error(exc: ValidationError) -> InvalidRequestError:
    """Our own error raised inside a validator, or one InvalidRequestError naming each field."""
    problems = []
    for error in exc.errors():
        original = (error.get("ctx") or {}).get("error")
        if isinstance(original, InvalidRequestError):
            return original
        where = ".".join(str(part) for part in error["loc"]) or "request"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown field {where!r}")
        else:
            problems.append(f"{where}: {error['msg']}")
    return InvalidRequestError("Invalid request: " + "; ".join(problems) + ".")


class Usage(BaseModel):
    """Token counts; `estimated` is true when they were not counted by the model's tokenizer.

    `dropped_turns` counts the oldest turns the backend left out to fit its context.
    """

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    dropped_turns: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class VisionResult(BaseModel):
    """The model's answer and what is known about how it was made."""

    model_config = ConfigDict(frozen=True)

    text: str
    usage: Usage = Usage()
    finish_reason: FinishReason | None = None
    model: str | None = None
    request_id: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    logs: tuple[str, ...] = ()


class VisionChunk(BaseModel):
    """One piece of a streamed answer; the last one carries the whole `result`."""

    model_config = ConfigDict(frozen=True)

    delta: str
    result: VisionResult | None = None

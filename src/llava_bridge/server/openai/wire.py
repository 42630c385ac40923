"""OpenAI's chat completion request and answers, as far as LLaVA can honour them.

The request is validated strictly (`max_tokens: "5"` or `5.0` is refused, not
coerced). Fields that change what an answer means and that LLaVA cannot do
(`n` > 1, tools, log probabilities) are refused when the request is converted;
other fields OpenAI defines (`seed`, `user`, penalties, ...) are accepted and ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llava_bridge.types import MAX_NEW_TOKENS_LIMIT

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "ContentPart",
    "ImageURL",
    "JsonSchemaFormat",
    "ResponseFormat",
    "StreamOptions",
]

MAX_STOP_STRINGS = 16
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


class ImageURL(_Wire):
    """An image: a data: URI, an http(s) URL, or a URL of a file stored on this server."""

    url: str
    detail: str | None = None


class ContentPart(_Wire):
    """One part of a message's content: `text`, `image_url` or (from an assistant) `refusal`."""

    type: str
    text: str | None = None
    image_url: ImageURL | None = None
    refusal: str | None = None

    @field_validator("image_url", mode="before", json_schema_input_type=ImageURL | str | None)
    @classmethod
    def _url_string(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value


class ChatMessage(_Wire):
    """One message; string content is short for one text part."""

    role: Role
    content: list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    function_call: Any = None

    @field_validator("content", mode="before", json_schema_input_type=str | list[ContentPart] | None)
    @classmethod
    def _text_shorthand(cls, value: Any) -> Any:
        return [{"type": "text", "text": value}] if isinstance(value, str) else value


class StreamOptions(_Wire):
    include_usage: bool = False


class JsonSchemaFormat(_Wire):
    name: str | None = None
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Wire):
    """`text`, `json_object`, or `json_schema` with its schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatCompletionRequest(_Wire):
    """The body of `POST /v1/chat/completions`."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    stop: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, max_length=MAX_STOP_STRINGS)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    n: int | None = Field(default=None, ge=1)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @field_validator("stop", mode="before", json_schema_input_type=str | list[str] | None)
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

"""Pure conversion of LangChain messages into a core `VisionRequest`.

Accepted content: plain strings, `text` blocks, and images as v1 `image` blocks
(`url`, or `base64` with `mime_type`), legacy `source_type` image blocks, and
OpenAI `image_url` blocks (URL or data URI, dict or string form). Everything else
(audio, video, files, tool calls, ...) raises `UnsupportedContentError` naming the
block: nothing is dropped silently, except the `reasoning`/`thinking` blocks of
another model's earlier answers, which were never part of the conversation.

Each message becomes a core `Turn`; which image is sent, merging, several images
(`multi_image`) and text-only chats follow `llava_bridge.conversation`, the policy
LlamaIndex's adapter shares. An image block LLaVA cannot use (a bare file name, a
`file:` URL) is refused with the block forms that work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, SystemMessage

from llava_bridge.conversation import MultiImagePolicy, TextOnlyPolicy, Turn, build_request
from llava_bridge.errors import InvalidImageError, UnsupportedContentError
from llava_bridge.images import ImageInput
from llava_bridge.types import Role, VisionRequest

__all__ = [
    "MultiImagePolicy",
    "TextOnlyPolicy",
    "Turn",
    "image_from_block",
    "message_role",
    "messages_to_request",
    "parse_content",
]

_ROLE_NAMES: dict[str, Role] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "system": "system",
    "developer": "system",
}
_SKIPPED_IN_ANSWERS = frozenset({"reasoning", "thinking", "redacted_thinking"})
_TOOL_BLOCKS = frozenset(
    {"tool_call", "tool_call_chunk", "invalid_tool_call", "tool_use", "server_tool_call", "tool_result"}
)
_NO_TOOLS = "LLaVA has no tool calling; give it text and images only (for agents, use LlavaImageTool)."
BLOCK_FORMS = (
    "{'type': 'image', 'base64': '<base64 data>', 'mime_type': 'image/jpeg'}, "
    "{'type': 'image_url', 'image_url': {'url': 'data:image/jpeg;base64,...' or 'https://...'}}, "
    "or {'type': 'image', 'url': 'https://...'}"
)
"""The image block forms ChatLlava takes, quoted in its advice."""
_LOCAL_FILE = "For a local file, read its bytes and send them base64-encoded in the first form."


def message_role(message: BaseMessage) -> Role:
    """The core role of a LangChain message; tool and function messages are refused."""
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        if message.tool_calls or message.invalid_tool_calls:
            raise UnsupportedContentError(f"An AI message in the history holds tool calls. {_NO_TOOLS}")
        return "assistant"
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, ChatMessage) and message.role.lower() in _ROLE_NAMES:
        return _ROLE_NAMES[message.role.lower()]
    raise UnsupportedContentError(
        f"A {type(message).__name__} (type {message.type!r}) cannot be sent to LLaVA; "
        f"use human, AI and system messages. {_NO_TOOLS}"
    )


def parse_content(content: str | Sequence[Any], role: Role) -> Turn:
    """A message's content as a core turn; refuse what LLaVA cannot take."""
    if isinstance(content, str):
        return Turn(role, content)
    texts: list[str] = []
    images: list[ImageInput] = []
    for position, block in enumerate(content):
        if isinstance(block, str):
            texts.append(block)
            continue
        if not isinstance(block, Mapping):
            raise UnsupportedContentError(
                f"Content part {position} is a {type(block).__name__}; give strings or dict blocks."
            )
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind in ("image", "image_url"):
            if role != "user":
                raise UnsupportedContentError(
                    f"An image block in a {role} message (part {position}); images go in human messages."
                )
            images.append(image_from_block(block, position))
        elif kind in _SKIPPED_IN_ANSWERS and role == "assistant":
            continue
        else:
            raise UnsupportedContentError(_unsupported_message(block, position))
    return Turn(role, "\n".join(t for t in texts if t), tuple(images))


def messages_to_request(
    messages: Sequence[BaseMessage],
    *,
    max_new_tokens: int,
    temperature: float | None = None,
    top_p: float | None = None,
    stop: Sequence[str] | None = None,
    model: str | None = None,
    multi_image: MultiImagePolicy = "grid",
    text_only: TextOnlyPolicy = "allow",
) -> VisionRequest:
    """The `VisionRequest` for a LangChain conversation (pure: reads no file, fetches no URL)."""
    return build_request(
        [parse_content(m.content, message_role(m)) for m in messages],
        multi_image=multi_image,
        text_only=text_only,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=tuple(stop or ()),
        model=model,
    )


def image_from_block(block: Mapping[str, Any], position: int) -> ImageInput:
    """An ImageInput from any of the image block shapes LangChain users send."""
    where = f"image block (part {position})"
    if block.get("type") == "image_url":
        value = block.get("image_url")
        url = value.get("url") if isinstance(value, Mapping) else value
        if not isinstance(url, str) or not url:
            raise UnsupportedContentError(f"The image_url {where} has no URL. Send one of: {BLOCK_FORMS}.")
        return _from_url(url, where)
    source_type = block.get("source_type")
    if source_type is not None:  # legacy v0 block
        if source_type == "url":
            return _from_url(_required_str(block, "url", where), where)
        if source_type == "base64":
            return _from_base64(_required_str(block, "data", where), block.get("mime_type"), where)
        if source_type == "id":
            raise UnsupportedContentError(_file_id_message(where))
        raise UnsupportedContentError(
            f"The {where} has source_type {source_type!r}; send one of: {BLOCK_FORMS}."
        )
    if block.get("url"):
        return _from_url(_required_str(block, "url", where), where)
    if block.get("base64"):
        return _from_base64(_required_str(block, "base64", where), block.get("mime_type"), where)
    if block.get("file_id"):
        raise UnsupportedContentError(_file_id_message(where))
    raise UnsupportedContentError(f"The {where} has no url or base64. Send one of: {BLOCK_FORMS}.")


def _from_url(url: str, where: str) -> ImageInput:
    """An http(s) URL or a data URI; anything else (a file name, file:) gets block-form advice."""
    text = url.strip()
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme not in ("http", "https", "data"):
        shown = text if len(text) <= 60 else text[:57] + "..."
        problem = f"has the scheme {scheme + ':'!r}" if scheme else "has no scheme (a file name?)"
        raise InvalidImageError(
            f"The {where} URL {shown!r} {problem}; LLaVA takes http(s) URLs and data: URIs only. "
            f"Send one of: {BLOCK_FORMS}. {_LOCAL_FILE}"
        )
    if scheme != "data":
        return ImageInput.from_url(text)
    try:
        return ImageInput.from_url(text)
    except InvalidImageError as exc:
        raise InvalidImageError(f"The {where}: {exc} Send one of: {BLOCK_FORMS}.") from None


def _from_base64(data: str, mime_type: Any, where: str) -> ImageInput:
    declared = mime_type if isinstance(mime_type, str) else ""
    try:
        return ImageInput.from_data_uri(f"data:{declared};base64,{data}")
    except InvalidImageError as exc:
        raise InvalidImageError(
            f"The {where} holds base64 that is not an image: {exc} Send one of: {BLOCK_FORMS}. {_LOCAL_FILE}"
        ) from None


def _required_str(block: Mapping[str, Any], key: str, where: str) -> str:
    value = block.get(key)
    if not isinstance(value, str) or not value:
        raise UnsupportedContentError(f"The {where} needs a string {key!r}.")
    return value


def _file_id_message(where: str) -> str:
    return (
        f"The {where} refers to a provider file id, which LLaVA cannot reach. "
        "Send the image as a URL or as base64 data instead."
    )


def _unsupported_message(block: Mapping[str, Any], position: int) -> str:
    kind = block.get("type")
    mime = block.get("mime_type") or ""
    if kind in _TOOL_BLOCKS:
        return f"A {kind!r} block (part {position}) cannot be sent. {_NO_TOOLS}"
    if kind in ("audio", "input_audio"):
        what = "an audio"
    elif kind == "video":
        what = "a video"
    elif kind == "file" and "pdf" in str(mime):
        what = "a PDF file"
    elif kind in ("file", "text-plain"):
        what = "a file"
    else:
        what = "an unsupported"
    return (
        f"Content part {position} is {what} block (type {kind!r}); LLaVA takes only text and one "
        "image. Remove it, or turn it into text or an image first."
    )

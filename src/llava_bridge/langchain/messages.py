"""Pure conversion of LangChain messages into a core `VisionRequest`.

Accepted content: plain strings, `text` blocks, and images as v1 `image` blocks
(`url`, or `base64` with `mime_type`), legacy `source_type` image blocks, and
OpenAI `image_url` blocks (URL or data URI, dict or string form). Everything else
(audio, video, files, tool calls, ...) raises `UnsupportedContentError` naming the
block: nothing is dropped silently, except the `reasoning`/`thinking` blocks of
another model's earlier answers, which were never part of the conversation.

LLaVA takes one image. The image used is the one of the latest user turn that
has one; several images in that turn follow `multi_image` ("error", "first",
"last"). Consecutive messages of one role are merged into one turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, SystemMessage

from llava_bridge.errors import UnsupportedContentError
from llava_bridge.images import ImageInput
from llava_bridge.types import Message, Role, VisionRequest

__all__ = [
    "MultiImagePolicy",
    "TextOnlyPolicy",
    "Turn",
    "message_role",
    "messages_to_request",
    "parse_content",
]

MultiImagePolicy = Literal["error", "first", "last"]
TextOnlyPolicy = Literal["allow", "error"]

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


@dataclass
class Turn:
    """One message reduced to what LLaVA takes: its role, text parts and images."""

    role: Role
    texts: list[str] = field(default_factory=list)
    images: list[ImageInput] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(t for t in self.texts if t)


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
    """Split a message's content into text parts and images; refuse what LLaVA cannot take."""
    turn = Turn(role=role)
    if isinstance(content, str):
        turn.texts.append(content)
        return turn
    for position, block in enumerate(content):
        if isinstance(block, str):
            turn.texts.append(block)
            continue
        if not isinstance(block, Mapping):
            raise UnsupportedContentError(
                f"Content part {position} is a {type(block).__name__}; give strings or dict blocks."
            )
        kind = block.get("type")
        if kind == "text":
            turn.texts.append(str(block.get("text", "")))
        elif kind in ("image", "image_url"):
            if role != "user":
                raise UnsupportedContentError(
                    f"An image block in a {role} message (part {position}); images go in human messages."
                )
            turn.images.append(_image_from_block(block, position))
        elif kind in _SKIPPED_IN_ANSWERS and role == "assistant":
            continue
        else:
            raise UnsupportedContentError(_unsupported_message(block, position))
    return turn


def messages_to_request(
    messages: Sequence[BaseMessage],
    *,
    max_new_tokens: int,
    temperature: float | None = None,
    top_p: float | None = None,
    stop: Sequence[str] | None = None,
    model: str | None = None,
    multi_image: MultiImagePolicy = "error",
    text_only: TextOnlyPolicy = "allow",
) -> VisionRequest:
    """The `VisionRequest` for a LangChain conversation (pure: reads no file, fetches no URL)."""
    turns = _merge_same_role([parse_content(m.content, message_role(m)) for m in messages])
    turns = [t for i, t in enumerate(turns) if t.text or t.images or i == len(turns) - 1]
    image_turn = next((i for i in range(len(turns) - 1, -1, -1) if turns[i].images), None)
    image = None
    if image_turn is not None:
        image = _pick_image(turns[image_turn].images, multi_image)
    elif text_only == "error":
        raise UnsupportedContentError(
            "The conversation has no image and text_only='error' is set; add an image block "
            "to a human message, or set text_only='allow'."
        )
    return VisionRequest(
        messages=tuple(Message(role=t.role, content=t.text) for t in turns),
        image=image,
        image_turn=image_turn,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=tuple(stop or ()),
        model=model,
    )


def _merge_same_role(turns: list[Turn]) -> list[Turn]:
    merged: list[Turn] = []
    for turn in turns:
        if merged and merged[-1].role == turn.role:
            previous = merged[-1]
            joined = "\n\n".join(t for t in (previous.text, turn.text) if t)
            merged[-1] = Turn(previous.role, [joined], previous.images + turn.images)
        else:
            merged.append(Turn(turn.role, [turn.text], list(turn.images)))
    return merged


def _pick_image(images: list[ImageInput], policy: MultiImagePolicy) -> ImageInput:
    if len(images) == 1 or policy == "first":
        return images[0]
    if policy == "last":
        return images[-1]
    raise UnsupportedContentError(
        f"The latest message with images has {len(images)} of them; LLaVA takes one per request. "
        "Send one image, or choose which one with multi_image='first' or multi_image='last'."
    )


def _image_from_block(block: Mapping[str, Any], position: int) -> ImageInput:
    """An ImageInput from any of the image block shapes LangChain users send."""
    where = f"image block (part {position})"
    if block.get("type") == "image_url":
        value = block.get("image_url")
        url = value.get("url") if isinstance(value, Mapping) else value
        if not isinstance(url, str) or not url:
            raise UnsupportedContentError(
                f"The image_url {where} has no URL; give {{'image_url': {{'url': 'https://...'}}}}."
            )
        return ImageInput.from_url(url)
    source_type = block.get("source_type")
    if source_type is not None:  # legacy v0 block
        if source_type == "url":
            return ImageInput.from_url(_required_str(block, "url", where))
        if source_type == "base64":
            return _from_base64(_required_str(block, "data", where), block.get("mime_type"))
        if source_type == "id":
            raise UnsupportedContentError(_file_id_message(where))
        raise UnsupportedContentError(f"The {where} has source_type {source_type!r}; use 'url' or 'base64'.")
    if block.get("url"):
        return ImageInput.from_url(_required_str(block, "url", where))
    if block.get("base64"):
        return _from_base64(_required_str(block, "base64", where), block.get("mime_type"))
    if block.get("file_id"):
        raise UnsupportedContentError(_file_id_message(where))
    raise UnsupportedContentError(
        f"The {where} has no url, base64 or file_id; e.g. {{'type': 'image', 'url': 'https://...'}}."
    )


def _from_base64(data: str, mime_type: Any) -> ImageInput:
    declared = mime_type if isinstance(mime_type, str) else ""
    return ImageInput.from_data_uri(f"data:{declared};base64,{data}")


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

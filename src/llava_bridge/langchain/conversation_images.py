"""The images of an agent's conversation, and which one a tool call refers to.

An agent's model should not copy a data URI (often hundreds of KB) into tool arguments.
`LlavaImageTool` lets it omit the image, or name one by reference: "latest", "first", or an index
into the images of the conversation's human messages (0 = first, -1 = latest, as in a
Python list). LangGraph's ToolNode (inside `create_agent`) injects the graph state,
from which the images are read here. Anything else is an image source (URL, data URI,
or a path when allowed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage

__all__ = [
    "ImageReference",
    "NoConversationImageError",
    "conversation_image_blocks",
    "parse_reference",
    "pick_image_block",
    "state_messages",
]

_NAMED = {"": -1, "latest": -1, "last": -1, "newest": -1, "current": -1, "first": 0}
_INDEX = re.compile(r"^(?:image\s*)?#?\s*(-?\d{1,6})$", re.IGNORECASE)


class NoConversationImageError(LookupError):
    """The reference names no image of the conversation; the message says what the agent can do."""


@dataclass(frozen=True)
class ImageReference:
    """An index into the conversation's images (-1: the latest)."""

    index: int

    def describe(self, count: int) -> str:
        """'image 2 of 3', counted from 1 for people reading traces."""
        position = self.index if self.index >= 0 else count + self.index
        return f"conversation image {position + 1} of {count}"


def parse_reference(value: str | int | None) -> ImageReference | str:
    """An `ImageReference` for None, "latest", "first", an int or "#2"-like text; else the text (a source)."""
    if value is None:
        return ImageReference(-1)
    if isinstance(value, int) and not isinstance(value, bool):
        return ImageReference(value)
    text = str(value).strip()
    if text.lower() in _NAMED:
        return ImageReference(_NAMED[text.lower()])
    match = _INDEX.match(text)
    if match:
        return ImageReference(int(match.group(1)))
    return text


def state_messages(state: Any, key: str = "messages") -> list[BaseMessage]:
    """The messages of a LangGraph state (a dict, an object with `.messages`, or a list)."""
    if isinstance(state, Mapping):
        messages = state.get(key, [])
    elif isinstance(state, Sequence) and not isinstance(state, (str, bytes)):
        messages = state
    else:
        messages = getattr(state, key, [])
    return [m for m in messages if isinstance(m, BaseMessage)]


def conversation_image_blocks(messages: Sequence[BaseMessage]) -> list[Mapping[str, Any]]:
    """The image blocks of the human messages, in conversation order."""
    blocks: list[Mapping[str, Any]] = []
    for message in messages:
        if not isinstance(message, HumanMessage) or isinstance(message.content, str):
            continue
        for block in message.content:
            if isinstance(block, Mapping) and block.get("type") in ("image", "image_url"):
                blocks.append(block)
    return blocks


def pick_image_block(
    blocks: Sequence[Mapping[str, Any]], reference: ImageReference
) -> tuple[Mapping[str, Any], str]:
    """The block `reference` names and a label for it; `NoConversationImageError` with advice if none."""
    count = len(blocks)
    if count == 0:
        raise NoConversationImageError(
            "The conversation holds no image. Ask the user to attach one, or pass image as an "
            "http(s) URL or a data: URI."
        )
    if not -count <= reference.index < count:
        raise NoConversationImageError(
            f"There is no image {reference.index}: the conversation holds {count} image(s). "
            f"Give an index from 0 to {count - 1} (0 = first), -1 for the latest, or omit image."
        )
    return blocks[reference.index], reference.describe(count)

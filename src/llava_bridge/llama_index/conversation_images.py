"""The images of an agent's conversation, and which one a tool call refers to.

A tool-calling model should not copy an image it was shown into the tool's
arguments. It leaves `image` empty (the latest image the user sent), or names one:
"latest", "first", or an index counting from 0 (negative counts from the end), as
`LlavaImageTool` does in LangChain. LlamaIndex
agents keep the chat in their workflow `Context` (`ctx.store["memory"]`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole
from llama_index.core.workflow import Context

from llava_bridge.errors import InvalidImageError

__all__ = ["choose_block", "conversation_images", "is_reference"]

_NAMED = {"": -1, "latest": -1, "last": -1, "first": 0}
_INDEX = re.compile(r"^(?:image\s*)?#?(-?\d+)$")


def is_reference(image: str | None) -> bool:
    """Whether `image` points into the conversation rather than naming an image itself."""
    if image is None:
        return True
    text = image.strip().lower()
    return text in _NAMED or _INDEX.match(text) is not None


async def conversation_images(ctx: Context) -> list[ImageBlock]:
    """Every `ImageBlock` of the user's messages in the agent's memory, oldest first."""
    memory = await ctx.store.get("memory", default=None)
    if memory is None:
        return []
    messages: Sequence[ChatMessage] = await memory.aget_all()
    return [
        block
        for message in messages
        if message.role == MessageRole.USER
        for block in message.blocks
        if isinstance(block, ImageBlock)
    ]


def choose_block(images: Sequence[ImageBlock], reference: str | None) -> ImageBlock:
    """The image `reference` names; errors say what the calling model can do instead."""
    if not images:
        raise InvalidImageError(
            "The conversation holds no image. Ask the user to attach one, or pass an http(s) URL as image."
        )
    text = (reference or "").strip().lower()
    if text in _NAMED:
        return images[_NAMED[text]]
    match = _INDEX.match(text)
    if match is None:
        raise InvalidImageError(f"{reference!r} does not name an image of the conversation.")
    index = int(match.group(1))
    if not -len(images) <= index < len(images):
        raise InvalidImageError(
            f"The conversation holds {len(images)} image{'s' if len(images) != 1 else ''}; leave image "
            f"empty for the latest, or give an index from 0 to {len(images) - 1}."
        )
    return images[index]

"""LlamaIndex `ChatMessage`s to one core `VisionRequest` (pure, apart from reading named paths).

The endpoint takes one image. The image goes with the latest user turn that has
any; images in older turns are left out. More than one image in that turn is an
error unless a `MultiImagePolicy` other than "error" is chosen:

- "first" / "last": keep that one image;
- "grid": tile them into one picture (they must be bytes or paths: URLs are not fetched).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from llama_index.core.base.llms.types import CachePoint, ChatMessage, ImageBlock, MessageRole, TextBlock
from PIL import Image

from llava_bridge.errors import InvalidImageError, UnsupportedContentError
from llava_bridge.images import MODEL_IMAGE_SIDE, ImageInput
from llava_bridge.llama_index.images import image_from_block
from llava_bridge.types import DEFAULT_MAX_NEW_TOKENS, Message, Role, VisionRequest

__all__ = ["MultiImagePolicy", "RequestSettings", "to_vision_request"]

MultiImagePolicy = Literal["error", "first", "last", "grid"]

_ROLES: dict[MessageRole, Role] = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
}


@dataclass(frozen=True)
class RequestSettings:
    """Generation settings that go into every request."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    multi_image: MultiImagePolicy = "error"


def to_vision_request(messages: Sequence[ChatMessage], settings: RequestSettings) -> VisionRequest:
    """One request from a chat: text turns, and the image of the latest user turn that has one."""
    turns: list[Message] = []
    image_turn: int | None = None
    image_blocks: list[ImageBlock] = []
    for message in messages:
        role = _role(message.role)
        texts: list[str] = []
        images: list[ImageBlock] = []
        for block in message.blocks:
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif isinstance(block, ImageBlock):
                images.append(block)
            elif not isinstance(block, CachePoint):
                raise UnsupportedContentError(
                    f"LLaVA takes text and images only, not a {type(block).__name__} "
                    f"(block_type={getattr(block, 'block_type', '?')!r}); remove it from the message."
                )
        if images:
            if role != "user":
                raise UnsupportedContentError(
                    f"An image is in a {role} message; put images in user messages only."
                )
            image_turn, image_blocks = len(turns), images
        turns.append(Message(role=role, content="\n".join(texts)))
    if not turns:
        raise UnsupportedContentError("The chat has no messages; send at least one user message.")
    image = _choose_image(image_blocks, settings.multi_image) if image_blocks else None
    return VisionRequest(
        messages=tuple(turns),
        image=image,
        image_turn=image_turn if image is not None else None,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        stop=settings.stop,
    )


def _role(role: MessageRole | str) -> Role:
    try:
        return _ROLES[MessageRole(role)]
    except (KeyError, ValueError):
        raise UnsupportedContentError(
            f"LLaVA cannot take a {str(getattr(role, 'value', role))!r} message: it has no tool "
            "calling. Give it to a tool-calling LLM as LlavaToolSpec(...).to_tool_list(), or use a "
            "ReActAgent (which sends tool results as user messages)."
        ) from None


def _choose_image(blocks: list[ImageBlock], policy: MultiImagePolicy) -> ImageInput:
    if len(blocks) == 1 or policy == "first":
        return image_from_block(blocks[0])
    if policy == "last":
        return image_from_block(blocks[-1])
    if policy == "grid":
        return _grid([image_from_block(block) for block in blocks])
    raise UnsupportedContentError(
        f"The message holds {len(blocks)} images but LLaVA takes one. Send one image, or set "
        "multi_image='first', 'last' or 'grid' (tiles them into one picture)."
    )


def _grid(images: list[ImageInput]) -> ImageInput:
    """Tile images into one PNG, each fitted into a square cell the model's input size."""
    if any(image.is_url for image in images):
        raise InvalidImageError(
            "multi_image='grid' needs the images themselves, and URLs are not fetched; "
            "pass them as path= or image= bytes, or choose multi_image='first' or 'last'."
        )
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    cell = MODEL_IMAGE_SIDE
    canvas = Image.new("RGB", (columns * cell, rows * cell), (255, 255, 255))
    for index, image in enumerate(images):
        picture = image.to_pil()
        picture.thumbnail((cell, cell))
        x = (index % columns) * cell + (cell - picture.width) // 2
        y = (index // columns) * cell + (cell - picture.height) // 2
        canvas.paste(picture, (x, y))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return ImageInput(data=buffer.getvalue(), source=f"grid of {len(images)} images")

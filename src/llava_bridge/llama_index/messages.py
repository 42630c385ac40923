"""LlamaIndex `ChatMessage`s to core turns, then one `VisionRequest` by the shared policy.

Each message becomes a `llava_bridge.conversation.Turn`; which image is sent,
merging, several images (`multi_image`, "grid" by default) and text-only chats
follow `llava_bridge.conversation`, as in the LangChain adapter. Image blocks are
converted lazily: only the image sent is read (a path) or decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llama_index.core.base.llms.types import CachePoint, ChatMessage, ImageBlock, MessageRole, TextBlock

from llava_bridge.conversation import ImageSource, MultiImagePolicy, Turn, build_request
from llava_bridge.errors import UnsupportedContentError
from llava_bridge.images import ImageInput
from llava_bridge.llama_index.images import image_from_block
from llava_bridge.types import DEFAULT_MAX_NEW_TOKENS, Role, VisionRequest

__all__ = ["MultiImagePolicy", "RequestSettings", "to_turn", "to_vision_request"]

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
    multi_image: MultiImagePolicy = "grid"


def to_vision_request(messages: Sequence[ChatMessage], settings: RequestSettings) -> VisionRequest:
    """One request from a chat, by `llava_bridge.conversation`'s policy."""
    return build_request(
        [to_turn(message) for message in messages],
        multi_image=settings.multi_image,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        stop=settings.stop,
    )


def to_turn(message: ChatMessage) -> Turn:
    """A message as a core turn: its text blocks joined by newlines, its images unread."""
    texts: list[str] = []
    images: list[ImageSource] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ImageBlock):
            images.append(_reader(block))
        elif not isinstance(block, CachePoint):
            raise UnsupportedContentError(
                f"LLaVA takes text and images only, not a {type(block).__name__} "
                f"(block_type={getattr(block, 'block_type', '?')!r}); remove it from the message."
            )
    return Turn(_role(message.role), "\n".join(t for t in texts if t), tuple(images))


def _reader(block: ImageBlock) -> Callable[[], ImageInput]:
    return lambda: image_from_block(block)


def _role(role: MessageRole | str) -> Role:
    try:
        return _ROLES[MessageRole(role)]
    except (KeyError, ValueError):
        raise UnsupportedContentError(
            f"LLaVA cannot take a {str(getattr(role, 'value', role))!r} message: it has no tool "
            "calling. Give it to a tool-calling LLM as LlavaToolSpec(...).to_tool_list(), or use a "
            "ReActAgent (which sends tool results as user messages)."
        ) from None

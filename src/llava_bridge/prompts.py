"""Turning a conversation into what LLaVA takes, within its token budget.

Two renderings:

- `render_llama3` writes the Llama-3 chat template the model was trained on, with
  `<image>` at the start of the turn that holds the image. Local backends use it.
- `render_single_prompt` flattens the conversation into one prompt string for
  endpoints that take a single `prompt` field (fal), which wrap it in the template
  themselves.

`fit_to_context` trims the oldest turns (keeping the system prompt and the latest
turn) until the conversation fits: context window - 576 image tokens -
max_new_tokens - template overhead.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from llava_bridge.errors import ContextOverflowError
from llava_bridge.types import Message, VisionRequest

__all__ = [
    "CONTEXT_WINDOW",
    "IMAGE_TOKENS",
    "IMAGE_PLACEHOLDER",
    "TokenBudget",
    "estimate_tokens",
    "fit_to_context",
    "neutralize_special_tokens",
    "render_llama3",
    "render_single_prompt",
]

CONTEXT_WINDOW = 4096
"""LLaVA Llama3 8B v1.1 was trained on 4,096 tokens (576 image + up to 3,520 text)."""
IMAGE_TOKENS = 576
"""A 336 x 336 image becomes 24 x 24 = 576 tokens."""
IMAGE_PLACEHOLDER = "<image>"
TURN_OVERHEAD_TOKENS = 5
"""`<|start_header_id|>role<|end_header_id|>\\n\\n ... <|eot_id|>` around each turn."""
PROMPT_OVERHEAD_TOKENS = 6
"""BOS plus the assistant header that opens the answer."""

TokenCounter = Callable[[str], int]


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate of Llama-3 tokens: one per 3 characters, rounded up.

    English averages about 4 characters a token, so this over-counts and trims a
    little early rather than overflowing the context.
    """
    return math.ceil(len(text) / 3)


def neutralize_special_tokens(text: str) -> str:
    """Break `<image>` and `<|...|>` in user text so they cannot act as special tokens.

    Otherwise a message that contains `<image>` adds image tokens the model has no
    image for, and one that contains `<|eot_id|>` can forge a turn.
    """
    return text.replace(IMAGE_PLACEHOLDER, "<image\u200b>").replace("<|", "<\u200b|")


def render_llama3(messages: Sequence[Message], image_index: int | None = None) -> str:
    """The Llama-3 chat prompt, ending with the open assistant header (no BOS)."""
    parts = []
    for index, message in enumerate(messages):
        content = neutralize_special_tokens(message.content)
        if index == image_index:
            content = f"{IMAGE_PLACEHOLDER}\n{content}"
        parts.append(f"<|start_header_id|>{message.role}<|end_header_id|>\n\n{content}<|eot_id|>")
    parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


def render_single_prompt(messages: Sequence[Message]) -> str:
    """One prompt string: the latest turn alone, or a labelled transcript before it."""
    if len(messages) == 1:
        return messages[0].content
    lines = []
    system = [m.content for m in messages if m.role == "system"]
    if system:
        lines.append("\n".join(system))
        lines.append("")
    history = [m for m in messages[:-1] if m.role != "system"]
    if history:
        lines.append("Conversation so far:")
        for message in history:
            speaker = "User" if message.role == "user" else "Assistant"
            lines.append(f"{speaker}: {message.content}")
        lines.append("")
        lines.append("Now answer the user's latest message:")
    lines.append(messages[-1].content)
    return "\n".join(lines)


@dataclass(frozen=True)
class TokenBudget:
    """How the context window was spent on one request."""

    context_window: int
    image_tokens: int
    max_new_tokens: int
    prompt_tokens: int
    dropped_turns: int
    estimated: bool

    @property
    def available(self) -> int:
        """Tokens left for the conversation text."""
        return self.context_window - self.image_tokens - self.max_new_tokens - PROMPT_OVERHEAD_TOKENS


def fit_to_context(
    request: VisionRequest,
    *,
    context_window: int = CONTEXT_WINDOW,
    count_tokens: TokenCounter | None = None,
) -> tuple[VisionRequest, TokenBudget]:
    """Drop the oldest turns until the request fits; raise ContextOverflowError if it cannot.

    The system prompts and the latest user turn are always kept; the other turns
    are kept newest first while they fit, so the history sent is the longest recent
    stretch that fits. The turn holding the image keeps it, or the image is dropped
    with its turn. Turns are counted newest first and counting stops at the first
    turn that does not fit: a history of any length costs one pass over its roles
    plus one count per kept turn (and one more).
    """
    counter = count_tokens or estimate_tokens
    messages = request.messages
    image_tokens = IMAGE_TOKENS if request.image is not None else 0
    budget = TokenBudget(context_window, image_tokens, request.max_new_tokens, 0, 0, count_tokens is None)
    available = budget.available
    last = len(messages) - 1

    def cost(index: int) -> int:
        return counter(messages[index].content) + TURN_OVERHEAD_TOKENS

    systems = [i for i, m in enumerate(messages) if m.role == "system" and i != last]
    fixed = cost(last) + sum(cost(i) for i in systems)
    if fixed > available:
        what = "estimated " if count_tokens is None else ""
        raise ContextOverflowError(
            f"The latest message (with any system prompt) needs {fixed} {what}tokens but only "
            f"{available} are left in the {context_window}-token context after the image "
            f"({image_tokens}) and max_new_tokens ({request.max_new_tokens}). "
            "Shorten the message or lower max_new_tokens.",
            needed=fixed,
            available=available,
        )
    used = fixed
    history: list[tuple[int, int]] = []  # (index, cost), newest first
    for index in range(last - 1, -1, -1):
        if messages[index].role == "system":
            continue
        turn_cost = cost(index)
        if used + turn_cost > available:
            break
        history.append((index, turn_cost))
        used += turn_cost
    if len(history) + len(systems) == last:  # nothing dropped
        return request, replace(budget, prompt_tokens=used + image_tokens + PROMPT_OVERHEAD_TOKENS)
    # A conversation must not start with an assistant turn after the system prompt.
    while history and messages[history[-1][0]].role == "assistant":
        used -= history.pop()[1]
    kept = sorted({*systems, *(index for index, _ in history), last})
    update: dict[str, object] = {"messages": tuple(messages[i] for i in kept)}
    if request.image is not None:
        image_index = request.image_index
        position = bisect.bisect_left(kept, image_index) if image_index is not None else len(kept)
        if position < len(kept) and kept[position] == image_index:
            update["image_turn"] = position
        else:
            update["image"] = None
            update["image_turn"] = None
            image_tokens = 0
    trimmed = request.model_copy(update=update)
    return trimmed, replace(
        budget,
        image_tokens=image_tokens,
        prompt_tokens=used + image_tokens + PROMPT_OVERHEAD_TOKENS,
        dropped_turns=len(messages) - len(kept),
    )

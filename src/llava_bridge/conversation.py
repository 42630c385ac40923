"""One conversation policy for every adapter: core turns in, one `VisionRequest` out.

The LangChain and LlamaIndex adapters only turn their framework's messages into
`Turn`s (role, text, images) and call `build_request`, so both behave the same:

- consecutive turns of one role are merged into one (texts joined by a blank line);
- turns with neither text nor image are left out (the latest turn always stays);
- images go in user turns only; the image sent is the one of the latest user turn
  that has any, and images of older turns are left out;
- several images in that turn follow `multi_image`: "grid" (the default) tiles 2-4
  of them into one picture (the model sees one 336-px square, so each image gets
  less of it); "first" or "last" keeps one; "error" refuses. More than 4 for a grid
  is an error naming the setting;
- a conversation with no image follows `text_only`: "allow" sends it as text (a
  backend that needs an image adds a neutral placeholder), "error" refuses it.

Fitting the context and cutting stop strings happen once, in the backend: it alone
knows its context window, whether its token counts are exact, whether it adds a
placeholder image, and the text its model produced. Each backend calls
`fit_to_context` (re-exported here) while preparing a request and cuts stops from
its answer; adapters do neither. The turns trimming dropped are reported as
`VisionResult.usage.dropped_turns` where the backend knows them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from llava_bridge.errors import UnsupportedContentError
from llava_bridge.grid import MAX_GRID_IMAGES, tile_images
from llava_bridge.images import ImageInput
from llava_bridge.prompts import TokenBudget, fit_to_context
from llava_bridge.types import DEFAULT_MAX_NEW_TOKENS, Message, Role, VisionRequest

__all__ = [
    "ImageSource",
    "MultiImagePolicy",
    "TextOnlyPolicy",
    "TokenBudget",
    "Turn",
    "build_request",
    "fit_to_context",
    "merge_turns",
]

MultiImagePolicy = Literal["error", "first", "last", "grid"]
TextOnlyPolicy = Literal["allow", "error"]
ImageSource = ImageInput | Callable[[], ImageInput]
"""An image, or a function that makes it (so that only the image sent is read or decoded)."""


@dataclass(frozen=True)
class Turn:
    """One message reduced to what LLaVA takes: its role, its text and its images."""

    role: Role
    text: str = ""
    images: tuple[ImageSource, ...] = ()


def merge_turns(turns: Sequence[Turn]) -> list[Turn]:
    """Consecutive turns of one role as one; empty turns left out, except the latest."""
    merged: list[Turn] = []
    for index, turn in enumerate(turns):
        if not turn.text and not turn.images and index != len(turns) - 1:
            continue
        if merged and merged[-1].role == turn.role:
            previous = merged[-1]
            text = "\n\n".join(t for t in (previous.text, turn.text) if t)
            merged[-1] = Turn(previous.role, text, previous.images + turn.images)
        else:
            merged.append(turn)
    return merged


def build_request(
    turns: Sequence[Turn],
    *,
    multi_image: MultiImagePolicy = "grid",
    text_only: TextOnlyPolicy = "allow",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float | None = None,
    top_p: float | None = None,
    stop: Sequence[str] = (),
    model: str | None = None,
) -> VisionRequest:
    """The `VisionRequest` for a conversation (untrimmed: the backend fits it to its context)."""
    if not turns:
        raise UnsupportedContentError("The conversation has no messages; send at least one user message.")
    for turn in turns:
        if turn.images and turn.role != "user":
            raise UnsupportedContentError(
                f"A message from the {turn.role} holds an image; images go in user messages only."
            )
    merged = merge_turns(turns)
    image_turn = next((i for i in range(len(merged) - 1, -1, -1) if merged[i].images), None)
    image = None
    if image_turn is not None:
        image = choose_image(merged[image_turn].images, multi_image)
    elif text_only == "error":
        raise UnsupportedContentError(
            "The conversation has no image and text_only='error' is set; add an image to a user "
            "message, or set text_only='allow'."
        )
    return VisionRequest(
        messages=tuple(Message(role=t.role, content=t.text) for t in merged),
        image=image,
        image_turn=image_turn,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=tuple(stop),
        model=model,
    )


def choose_image(images: Sequence[ImageSource], policy: MultiImagePolicy) -> ImageInput:
    """The one image sent for a turn's images, by `policy`."""
    if len(images) == 1 or policy == "first":
        return _resolve(images[0])
    if policy == "last":
        return _resolve(images[-1])
    if policy == "grid":
        if len(images) > MAX_GRID_IMAGES:
            raise UnsupportedContentError(
                f"The latest message with images has {len(images)} of them; multi_image='grid' tiles "
                f"at most {MAX_GRID_IMAGES} into one picture. Send {MAX_GRID_IMAGES} or fewer, or "
                "choose one with multi_image='first' or multi_image='last'."
            )
        return tile_images([_resolve(image) for image in images])
    raise UnsupportedContentError(
        f"The latest message with images has {len(images)} of them and multi_image='error' is set; "
        "LLaVA takes one image per request. Send one image, or set multi_image='grid' (tiles up to "
        f"{MAX_GRID_IMAGES} into one picture), 'first' or 'last'."
    )


def _resolve(image: ImageSource) -> ImageInput:
    return image if isinstance(image, ImageInput) else image()

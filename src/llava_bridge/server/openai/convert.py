"""OpenAI chat messages to one core `VisionRequest`, through `conversation.build_request`.

Messages become `Turn`s (system and developer messages are system turns; text
parts are joined by a line break). Only the images `build_request` will send are
loaded: those of the latest user turn that has any (after same-role turns merge),
fetched through the server's `ImageResolver` (data: URIs, files stored here, or
http(s) URLs behind its SSRF guard). A `response_format` asking for JSON appends
the same instructions ChatLlava's structured output uses.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

from llava_bridge.conversation import Turn, build_request, merge_turns
from llava_bridge.grid import MAX_GRID_IMAGES
from llava_bridge.images import ImageInput
from llava_bridge.server.images.loader import ImageResolver
from llava_bridge.server.openai.errors import OpenAIError
from llava_bridge.server.openai.wire import ChatCompletionRequest, ChatMessage
from llava_bridge.structured_output import json_instructions, with_instructions
from llava_bridge.types import DEFAULT_MAX_NEW_TOKENS, Role, VisionRequest

__all__ = ["PendingImage", "check_supported", "images_to_load", "to_turns", "to_vision_request"]

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


@dataclass
class PendingImage:
    """An image URL of a message; called by `build_request` once loaded."""

    url: str
    loaded: ImageInput | None = field(default=None, repr=False)

    def __call__(self) -> ImageInput:
        if self.loaded is None:  # images_to_load chose the wrong turn: a bug, not the caller's fault
            raise RuntimeError(f"The image {self.url[:60]!r} was used before it was loaded.")
        return self.loaded


def check_supported(body: ChatCompletionRequest) -> None:
    """Refuse what LLaVA cannot do: several choices, tools, log probabilities."""
    if body.n is not None and body.n != 1:
        raise OpenAIError(
            400, f"n={body.n} is not supported: this server returns one choice; use n=1.", param="n"
        )
    if body.tools or body.functions:
        param = "tools" if body.tools else "functions"
        raise OpenAIError(
            400, "This model cannot call tools; send the request without tools or functions.", param=param
        )
    if body.logprobs or body.top_logprobs:
        raise OpenAIError(400, "Log probabilities are not available from this server.", param="logprobs")
    form = body.response_format
    if (
        form is not None
        and form.type == "json_schema"
        and (form.json_schema is None or form.json_schema.json_schema is None)
    ):
        raise OpenAIError(
            400,
            "response_format of type 'json_schema' needs json_schema.schema (a JSON schema object).",
            param="response_format.json_schema",
        )


def to_turns(messages: Sequence[ChatMessage]) -> list[Turn]:
    """Each message as a `Turn`; tool messages, tool calls and non-text parts are refused."""
    turns = []
    for index, message in enumerate(messages):
        param = f"messages.{index}"
        role = _ROLES.get(message.role)
        if role is None:
            raise OpenAIError(
                400,
                f"Messages with role '{message.role}' are not supported: this model cannot call tools.",
                param=f"{param}.role",
            )
        if message.tool_calls or message.function_call:
            raise OpenAIError(
                400,
                "Assistant messages with tool calls are not supported: this model cannot call tools.",
                param=f"{param}.tool_calls",
            )
        texts: list[str] = []
        images: list[PendingImage] = []
        for part_index, part in enumerate(message.content or ()):
            where = f"{param}.content.{part_index}"
            if part.type == "text" and part.text is not None:
                texts.append(part.text)
            elif part.type == "refusal" and part.refusal is not None and role == "assistant":
                texts.append(part.refusal)
            elif part.type == "image_url" and part.image_url is not None:
                if role != "user":
                    raise OpenAIError(
                        400,
                        f"An image in a {message.role} message: images go in user messages only.",
                        param=where,
                    )
                images.append(PendingImage(part.image_url.url))
            else:
                raise OpenAIError(
                    400,
                    f"Content part of type '{part.type}' is not supported here: send 'text' and "
                    "'image_url' parts (with their 'text' or 'image_url' field).",
                    param=where,
                )
        turns.append(Turn(role, "\n".join(t for t in texts if t), tuple(images)))
    return turns


def images_to_load(turns: Sequence[Turn]) -> list[PendingImage]:
    """The images `build_request` will send: those of the latest user turn that has any."""
    for turn in reversed(merge_turns(turns)):
        if turn.images:
            if len(turn.images) > MAX_GRID_IMAGES:
                return []  # build_request refuses this many before it resolves any
            return [image for image in turn.images if isinstance(image, PendingImage)]
    return []


async def to_vision_request(
    body: ChatCompletionRequest, resolver: ImageResolver, base_url: str
) -> VisionRequest:
    """The core request for `body`, its images loaded; OpenAIError or InvalidRequestError when unusable."""
    check_supported(body)
    turns = to_turns(body.messages)
    pending = images_to_load(turns)

    await _load(pending, resolver, base_url)
    build = functools.partial(
        build_request,
        turns,
        max_new_tokens=body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_NEW_TOKENS,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=tuple(body.stop or ()),
    )
    request = await asyncio.to_thread(build) if len(pending) > 1 else build()  # tiling is image work
    instructions = _json_instructions(body)
    return with_instructions(request, instructions) if instructions else request


async def _load(images: Sequence[PendingImage], resolver: ImageResolver, base_url: str) -> None:
    """Load `images` (several at once); the first failure is raised, the other loads cancelled."""

    async def load(image: PendingImage) -> None:
        is_data = image.url.lstrip()[:5].lower() == "data:"
        file_id = None if is_data else resolver.stored_file_id(image.url, base_url)
        image.loaded = await resolver.load(image.url, file_id)

    if len(images) == 1:
        await load(images[0])
        return
    try:
        async with asyncio.TaskGroup() as group:
            for image in images:
                group.create_task(load(image))
    except ExceptionGroup as failures:  # the first failure says what is wrong; the others were cancelled
        raise failures.exceptions[0] from None


def _json_instructions(body: ChatCompletionRequest) -> str | None:
    form = body.response_format
    if form is None or form.type == "text":
        return None
    if form.type == "json_object":
        return json_instructions("json_mode", None)
    assert form.json_schema is not None  # check_supported refused it otherwise
    return json_instructions("json_schema", form.json_schema.json_schema)

"""One conversation through ChatLlava and through LlavaLLM reaches the backend as the same request."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from PIL import Image

from llava_bridge import FakeBackend, VisionRequest
from llava_bridge.langchain import ChatLlava
from llava_bridge.llama_index import LlavaLLM

COLOURS = [(220, 20, 20), (20, 200, 20), (20, 20, 220), (128, 128, 128), (0, 0, 0)]


def png(rgb: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def conversation(images: int, history_turns: int = 1) -> list[tuple[str, str, list[bytes]]]:
    """(role, text, images): a system prompt, an older image, a history, two user messages in a row."""
    turns: list[tuple[str, str, list[bytes]]] = [("system", "Answer briefly.", [])]
    turns.append(("user", "What colour is this?", [png(COLOURS[4])]))
    for index in range(history_turns):
        turns.append(("assistant", f"Answer {index}: " + "words " * 60, []))
        turns.append(("user", f"Question {index}: " + "more " * 60, []))
    turns.append(("assistant", "Black.", []))
    turns.append(("user", "", [png(c) for c in COLOURS[:images]]))
    turns.append(("user", "And these, side by side?", []))
    return turns


def as_langchain(turns: list[tuple[str, str, list[bytes]]]) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    for role, text, images in turns:
        if role == "system":
            messages.append(SystemMessage(text))
        elif role == "assistant":
            messages.append(AIMessage(text))
        else:
            blocks: list[Any] = [{"type": "text", "text": text}] if text else []
            for image in images:
                data = base64.b64encode(image).decode()
                blocks.append({"type": "image", "base64": data, "mime_type": "image/png"})
            messages.append(HumanMessage(content=blocks))
    return messages


def as_llama_index(turns: list[tuple[str, str, list[bytes]]]) -> list[ChatMessage]:
    roles = {"system": MessageRole.SYSTEM, "user": MessageRole.USER, "assistant": MessageRole.ASSISTANT}
    messages = []
    for role, text, images in turns:
        blocks: list[Any] = [ImageBlock(image=i, image_mimetype="image/png") for i in images]
        if text:
            blocks.append(TextBlock(text=text))
        messages.append(ChatMessage(role=roles[role], blocks=blocks))
    return messages


def sent(backend: FakeBackend) -> VisionRequest:
    """What reached the backend, with the one field the adapters fill differently by design left out."""
    return backend.history[-1].model_copy(update={"model": None})


@pytest.mark.parametrize(
    ("images", "options"),
    [
        pytest.param(1, {}, id="one-image"),
        pytest.param(3, {}, id="grid-by-default"),
        pytest.param(4, {"multi_image": "grid"}, id="grid-of-four"),
        pytest.param(2, {"multi_image": "first"}, id="first"),
        pytest.param(2, {"multi_image": "last"}, id="last"),
        pytest.param(0, {}, id="text-only-latest-falls-back-to-the-older-image"),
    ],
)
def test_both_adapters_send_the_same_request(images: int, options: dict[str, Any]) -> None:
    turns = conversation(images)
    lc_backend, li_backend = FakeBackend("ok"), FakeBackend("ok")
    ChatLlava(backend=lc_backend, max_tokens=50, stop=["END"], **options).invoke(as_langchain(turns))
    LlavaLLM(backend=li_backend, max_new_tokens=50, stop=["END"], **options).chat(as_llama_index(turns))
    lc_request, li_request = sent(lc_backend), sent(li_backend)
    assert lc_request == li_request
    assert lc_request.messages[-1].content == "And these, side by side?"
    assert lc_request.messages[-2].role == "assistant"  # the two user messages were merged
    if images > 1 and options.get("multi_image", "grid") == "grid":
        assert lc_request.image is not None and lc_request.image.source == f"grid of {images} images"


def test_both_adapters_trim_a_long_history_the_same_way() -> None:
    turns = conversation(2, history_turns=40)
    lc_backend, li_backend = FakeBackend("ok", context_window=2000), FakeBackend("ok", context_window=2000)
    lc_answer = ChatLlava(backend=lc_backend, max_tokens=100).invoke(as_langchain(turns))
    LlavaLLM(backend=li_backend, max_new_tokens=100).chat(as_llama_index(turns))
    assert sent(lc_backend) == sent(li_backend)
    assert 2 < len(sent(lc_backend).messages) < len(turns) - 1
    assert lc_answer.response_metadata["dropped_turns"] == len(turns) - 1 - len(sent(lc_backend).messages)


def test_both_adapters_refuse_five_images_the_same_way() -> None:
    turns = conversation(5)
    with pytest.raises(ValueError, match="multi_image='grid' tiles at most 4") as lc_error:
        ChatLlava(backend=FakeBackend()).invoke(as_langchain(turns))
    with pytest.raises(ValueError, match="multi_image='grid' tiles at most 4") as li_error:
        LlavaLLM(backend=FakeBackend()).chat(as_llama_index(turns))
    assert str(lc_error.value) == str(li_error.value)

"""Conversion of LangChain messages into a core VisionRequest: every image form, every refusal."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from llava_bridge import FakeBackend, ImageInput, InvalidImageError, UnsupportedContentError
from llava_bridge.langchain import ChatLlava
from llava_bridge.langchain.messages import messages_to_request

URL = "https://example.com/coffee.png"


def convert(messages: list[BaseMessage], **options: Any) -> Any:
    return messages_to_request(messages, max_new_tokens=64, **options)


def ask(*blocks: Any) -> HumanMessage:
    return HumanMessage(content=[{"type": "text", "text": "What is this?"}, *blocks])


@pytest.mark.parametrize(
    "block_factory",
    [
        pytest.param(lambda b64: {"type": "image", "base64": b64, "mime_type": "image/png"}, id="v1-base64"),
        pytest.param(lambda b64: {"type": "image", "base64": b64}, id="v1-base64-no-mime"),
        pytest.param(
            lambda b64: {"type": "image", "source_type": "base64", "data": b64, "mime_type": "image/png"},
            id="v0-base64",
        ),
        pytest.param(
            lambda b64: {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
            id="openai-data-uri-dict",
        ),
        pytest.param(
            lambda b64: {"type": "image_url", "image_url": f"data:image/png;base64,{b64}"},
            id="openai-data-uri-string",
        ),
    ],
)
def test_inline_image_forms_give_the_same_image(block_factory: Any, png_b64: str, png_bytes: bytes) -> None:
    request = convert([ask(block_factory(png_b64))])
    assert request.image == ImageInput.from_bytes(png_bytes)
    assert request.image.mime_type == "image/png"
    assert request.prompt == "What is this?"
    assert request.image_index == 0


@pytest.mark.parametrize(
    "block",
    [
        pytest.param({"type": "image", "url": URL}, id="v1-url"),
        pytest.param({"type": "image", "source_type": "url", "url": URL}, id="v0-url"),
        pytest.param({"type": "image_url", "image_url": {"url": URL, "detail": "low"}}, id="openai-dict"),
        pytest.param({"type": "image_url", "image_url": URL}, id="openai-string"),
    ],
)
def test_url_image_forms_keep_the_url_unfetched(block: dict[str, Any]) -> None:
    request = convert([ask(block)])
    assert request.image is not None and request.image.url == URL


@pytest.mark.parametrize(
    "block_factory",
    [
        pytest.param(lambda b64: {"type": "image", "base64": b64, "mime_type": "image/jpeg"}, id="v1-base64"),
        pytest.param(
            lambda b64: {"type": "image", "source_type": "base64", "data": b64, "mime_type": "image/jpeg"},
            id="v0-base64",
        ),
        pytest.param(
            lambda b64: {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64}"}},
            id="openai-data-uri-dict",
        ),
        pytest.param(
            lambda b64: {"type": "image_url", "image_url": f"data:image/jpeg;base64,{b64}"},
            id="openai-data-uri-string",
        ),
        pytest.param(lambda b64: {"type": "image", "url": f"data:image/jpeg;base64,{b64}"}, id="v1-url-data"),
    ],
)
def test_png_bytes_declared_as_jpeg_are_sent_as_png(
    block_factory: Any, png_b64: str, png_bytes: bytes
) -> None:
    """The bytes decide the type (LLMImageBlobParser and many snippets label every image JPEG)."""
    backend = FakeBackend("A cup of coffee.")
    answer = ChatLlava(backend=backend).invoke([ask(block_factory(png_b64))])
    assert answer.content == "A cup of coffee."
    (request,) = backend.history
    assert request.image == ImageInput.from_bytes(png_bytes) and request.image.mime_type == "image/png"


def test_bytes_that_are_no_image_are_refused_whatever_their_label() -> None:
    text = base64.b64encode(b"%PDF-1.7 not an image at all").decode("ascii")
    with pytest.raises(InvalidImageError, match="not an image"):
        convert([ask({"type": "image", "base64": text, "mime_type": "image/jpeg"})])


def test_local_path_in_an_image_url_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="http\\(s\\) URLs and data: URIs only"):
        convert([ask({"type": "image_url", "image_url": "file:///etc/passwd"})])


@pytest.mark.parametrize(
    "block",
    [
        pytest.param({"type": "image", "url": "cat.jpg"}, id="v1-url-file-name"),
        pytest.param({"type": "image", "url": "/home/me/cat.jpg"}, id="v1-url-path"),
        pytest.param({"type": "image", "source_type": "url", "url": "cat.jpg"}, id="v0-url-file-name"),
        pytest.param({"type": "image_url", "image_url": {"url": "cat.jpg"}}, id="openai-dict-file-name"),
        pytest.param({"type": "image_url", "image_url": "file:///tmp/cat.jpg"}, id="openai-file-url"),
        pytest.param({"type": "image", "base64": "cat.jpg", "mime_type": "image/jpeg"}, id="v1-base64-name"),
        pytest.param({"type": "image", "source_type": "base64", "data": "@@@"}, id="v0-base64-junk"),
        pytest.param({"type": "image_url", "image_url": "data:image/png;base64,@@@"}, id="bad-data-uri"),
        pytest.param({"type": "image", "path": "cat.jpg"}, id="v1-path-key"),
        pytest.param({"type": "image_url", "image_url": {}}, id="openai-no-url"),
        pytest.param({"type": "image", "source_type": "path", "path": "x"}, id="v0-unknown-source"),
    ],
)
def test_bad_image_blocks_get_block_form_advice_not_python_advice(block: dict[str, Any]) -> None:
    with pytest.raises((InvalidImageError, UnsupportedContentError)) as caught:
        convert([ask(block)])
    message = str(caught.value)
    assert "'type': 'image', 'base64'" in message and "'type': 'image_url'" in message
    assert "'type': 'image', 'url'" in message
    assert "pathlib" not in message and "from_path" not in message


@pytest.mark.parametrize(
    ("block", "named"),
    [
        ({"type": "image", "file_id": "file-123"}, "file id"),
        ({"type": "image", "source_type": "id", "id": "file-123"}, "file id"),
        ({"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}, "audio block"),
        ({"type": "video", "url": "https://example.com/v.mp4"}, "video block"),
        ({"type": "file", "base64": "JVBERi0=", "mime_type": "application/pdf"}, "PDF file block"),
        ({"type": "file", "file_id": "f1"}, "a file block"),
        ({"type": "tool_call", "name": "x", "args": {}, "id": "1"}, "no tool calling"),
        ({"type": "mystery"}, "'mystery'"),
        ({"type": "image"}, "no url or base64"),
    ],
)
def test_unsupported_blocks_are_named(block: dict[str, Any], named: str) -> None:
    with pytest.raises(UnsupportedContentError, match=named):
        convert([ask(block)])


def test_plain_string_content_and_string_parts() -> None:
    request = convert([HumanMessage(content=["Look:", {"type": "text", "text": "what is it?"}])])
    assert request.prompt == "Look:\nwhat is it?"
    assert request.image is None
    assert convert([HumanMessage("hello")]).prompt == "hello"


def test_text_only_conversation_has_no_image_and_can_be_refused() -> None:
    assert convert([HumanMessage("hi")]).image is None
    with pytest.raises(UnsupportedContentError, match="text_only='allow'"):
        convert([HumanMessage("hi")], text_only="error")


def test_several_images_in_the_latest_turn_follow_the_policy(png_bytes: bytes, jpeg_bytes: bytes) -> None:
    png = ImageInput.from_bytes(png_bytes).to_data_uri()
    jpeg = ImageInput.from_bytes(jpeg_bytes).to_data_uri()
    message = ask({"type": "image_url", "image_url": png}, {"type": "image_url", "image_url": jpeg})
    with pytest.raises(UnsupportedContentError, match="has 2 of them.*multi_image='grid'"):
        convert([message], multi_image="error")
    grid = convert([message]).image  # the default tiles them
    assert grid.source == "grid of 2 images" and grid.size == (2 * 336, 336)
    assert convert([message], multi_image="first").image.mime_type == "image/png"
    assert convert([message], multi_image="last").image.mime_type == "image/jpeg"


def test_image_of_the_latest_user_turn_that_has_one_is_used(png_bytes: bytes, jpeg_bytes: bytes) -> None:
    png = ImageInput.from_bytes(png_bytes).to_data_uri()
    jpeg = ImageInput.from_bytes(jpeg_bytes).to_data_uri()
    messages: list[BaseMessage] = [
        SystemMessage("You describe images."),
        ask({"type": "image_url", "image_url": png}),
        AIMessage("A coffee cup."),
        ask({"type": "image_url", "image_url": jpeg}),
        AIMessage("A rocket."),
        HumanMessage("Which colour is it?"),
    ]
    request = convert(messages)
    assert request.image.mime_type == "image/jpeg"
    assert request.image_index == 3
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "user", "assistant", "user"]


def test_consecutive_same_role_messages_are_merged(png_b64: str) -> None:
    messages: list[BaseMessage] = [
        SystemMessage("Be brief."),
        SystemMessage("Be kind."),
        HumanMessage("Hello"),
        HumanMessage(content=[{"type": "image", "base64": png_b64}], name="alice"),
        AIMessage("Hi"),
        AIMessage("there"),
        HumanMessage("What is it?"),
    ]
    request = convert(messages)
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Be brief.\n\nBe kind."),
        ("user", "Hello"),
        ("assistant", "Hi\n\nthere"),
        ("user", "What is it?"),
    ]
    assert request.image_index == 1


def test_two_images_in_merged_consecutive_human_messages_count_as_one_turn(png_b64: str) -> None:
    block = {"type": "image", "base64": png_b64}
    messages: list[BaseMessage] = [HumanMessage(content=[block]), HumanMessage(content=["Compare", block])]
    with pytest.raises(UnsupportedContentError, match="has 2 of them"):
        convert(messages, multi_image="error")
    assert convert(messages).image.source == "grid of 2 images"


def test_reasoning_of_an_earlier_answer_is_skipped_but_not_in_user_turns() -> None:
    answer = AIMessage(content=[{"type": "reasoning", "reasoning": "hmm"}, {"type": "text", "text": "Cat."}])
    request = convert([HumanMessage("What?"), answer, HumanMessage("Sure?")])
    assert request.messages[1].content == "Cat."
    with pytest.raises(UnsupportedContentError, match="'reasoning'"):
        convert([HumanMessage(content=[{"type": "reasoning", "reasoning": "x"}, "hi"])])


@pytest.mark.parametrize(
    "message",
    [
        ToolMessage("42", tool_call_id="1"),
        FunctionMessage("42", name="f"),
        AIMessage("", tool_calls=[{"name": "f", "args": {}, "id": "1"}]),
    ],
)
def test_tool_messages_are_refused_with_a_pointer_to_the_tool(message: BaseMessage) -> None:
    with pytest.raises(UnsupportedContentError, match="LlavaImageTool"):
        convert([HumanMessage("hi"), message, HumanMessage("and?")])


def test_chat_message_roles_and_images_outside_user_turns() -> None:
    request = convert(
        [ChatMessage(role="system", content="Be brief."), ChatMessage(role="human", content="hi")]
    )
    assert [m.role for m in request.messages] == ["system", "user"]
    with pytest.raises(UnsupportedContentError, match="images go in human messages"):
        convert([SystemMessage(content=[{"type": "image", "url": URL}]), HumanMessage("hi")])


def test_settings_are_carried_over() -> None:
    request = convert([HumanMessage("hi")], temperature=0.2, top_p=0.9, stop=["END"], model="m")
    assert (request.max_new_tokens, request.temperature, request.top_p) == (64, 0.2, 0.9)
    assert request.stop == ("END",) and request.model == "m"

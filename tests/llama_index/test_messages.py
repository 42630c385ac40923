"""ChatMessage blocks -> VisionRequest: images from every source, roles, the one-image policy."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from llama_index.core.base.llms.types import (
    AudioBlock,
    CacheControl,
    CachePoint,
    DocumentBlock,
    ThinkingBlock,
)
from llama_index.core.llms import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.schema import ImageDocument, ImageNode, TextNode

from llava_bridge import InvalidImageError, InvalidPromptError, UnsupportedContentError
from llava_bridge.llama_index.images import block_from_node, image_from_block, image_from_node
from llava_bridge.llama_index.messages import RequestSettings, to_vision_request

from .conftest import colour_png, data_uri, dominant_name

SETTINGS = RequestSettings()


def user(*blocks: TextBlock | ImageBlock) -> ChatMessage:
    return ChatMessage(role=MessageRole.USER, blocks=list(blocks))


# -- ImageBlock sources ------------------------------------------------------------------


def test_bytes_block_is_stored_as_base64_and_decoded_back(red_png: bytes) -> None:
    block = ImageBlock(image=red_png)
    assert block.image != red_png  # llama-index keeps base64 in `image`
    image = image_from_block(block)
    assert image.data == red_png
    assert image.mime_type == "image/png"


def test_block_given_base64_text_decodes_once(red_png: bytes) -> None:
    image = image_from_block(ImageBlock(image=base64.b64encode(red_png)))
    assert image.data == red_png


def test_block_with_raw_bytes_assigned_after_validation(red_png: bytes) -> None:
    block = ImageBlock(image=b"x")
    block.image = red_png  # no validation on assignment: raw bytes stay raw
    assert image_from_block(block).data == red_png


def test_buffer_block_reads_the_buffer_and_rewinds(red_png: bytes) -> None:
    buffer = io.BytesIO(red_png)
    buffer.read()  # position at the end, as after a previous read
    image = image_from_block(ImageBlock(image=buffer))
    assert image.data == red_png
    assert buffer.tell() == 0


def test_path_block_reads_the_file(red_path: Path, red_png: bytes) -> None:
    image = image_from_block(ImageBlock(path=red_path))
    assert image.data == red_png
    assert image.source == str(red_path)


def test_http_url_block_is_passed_as_url_not_fetched() -> None:
    # 192.0.2.0/24 is reserved for documentation: a fetch would fail or hang.
    image = image_from_block(ImageBlock(url="https://192.0.2.1/cat.png"))
    assert image.is_url
    assert image.url == "https://192.0.2.1/cat.png"


def test_data_url_block_is_decoded(red_png: bytes) -> None:
    image = image_from_block(ImageBlock(url=data_uri(red_png)))
    assert image.data == red_png


def test_the_bytes_decide_the_type_not_the_declared_mimetype(red_png: bytes, red_path: Path) -> None:
    assert image_from_block(ImageBlock(image=red_png, image_mimetype="image/jpeg")).mime_type == "image/png"
    assert image_from_block(ImageBlock(path=red_path, image_mimetype="image/gif")).mime_type == "image/png"


def test_a_suffix_guess_does_not_reject_a_misnamed_file(tmp_path: Path, red_png: bytes) -> None:
    misnamed = tmp_path / "photo.jpg"
    misnamed.write_bytes(red_png)
    block = ImageBlock(path=misnamed)
    assert block.image_mimetype == "image/jpeg"  # llama-index guessed from the suffix
    assert image_from_block(block).mime_type == "image/png"


def test_bytes_that_are_not_an_image_are_refused() -> None:
    with pytest.raises(InvalidImageError, match="Not an image"):
        image_from_block(ImageBlock(image=b"%PDF-1.7 not an image"))


def test_empty_block_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="holds no image"):
        image_from_block(ImageBlock())


# -- nodes -----------------------------------------------------------------------------------


def test_image_nodes_of_every_kind(tmp_path: Path, red_png: bytes, red_path: Path) -> None:
    encoded = base64.b64encode(red_png).decode()
    assert image_from_node(ImageNode(image=encoded)).data == red_png
    assert image_from_node(ImageNode(image_path=str(red_path))).data == red_png
    assert image_from_node(ImageNode(image_url="https://192.0.2.1/a.png")).url == "https://192.0.2.1/a.png"
    assert image_from_node(ImageDocument(image=encoded)).data == red_png
    assert image_from_node(ImageDocument(image_path=str(red_path))).data == red_png
    text = TextNode(text="caption", metadata={"image_path": str(red_path)})
    assert image_from_node(text, ["image_path"]).data == red_png
    linked = TextNode(text="caption", metadata={"image_url": "https://192.0.2.1/b.png"})
    assert image_from_node(linked, ["image_url"]).url == "https://192.0.2.1/b.png"
    with pytest.raises(InvalidImageError, match="carries no image"):
        image_from_node(TextNode(text="no image"), ["image_path"])


def test_block_from_node_keeps_the_image(red_png: bytes, red_path: Path) -> None:
    encoded = base64.b64encode(red_png).decode()
    assert image_from_block(block_from_node(ImageNode(image=encoded))).data == red_png
    assert image_from_block(block_from_node(ImageDocument(image_path=str(red_path)))).data == red_png
    with pytest.raises(InvalidImageError, match="without an image"):
        block_from_node(TextNode(text="x"))


# -- messages -> request ---------------------------------------------------------------------


def test_roles_and_text_blocks_map_to_turns(red_png: bytes) -> None:
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
        user(TextBlock(text="Hello"), TextBlock(text="there")),
        ChatMessage(role=MessageRole.ASSISTANT, content="Hi."),
        user(ImageBlock(image=red_png), TextBlock(text="What is it?")),
    ]
    request = to_vision_request(messages, RequestSettings(max_new_tokens=9, stop=("END",), temperature=0.2))
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Be brief."),
        ("user", "Hello\nthere"),
        ("assistant", "Hi."),
        ("user", "What is it?"),
    ]
    assert request.image_index == 3
    assert (request.max_new_tokens, request.stop, request.temperature) == (9, ("END",), 0.2)


def test_text_only_chat_has_no_image() -> None:
    request = to_vision_request([user(TextBlock(text="Hi"))], SETTINGS)
    assert request.image is None


def test_follow_up_keeps_the_image_of_the_earlier_turn() -> None:
    messages = [
        user(ImageBlock(image=colour_png("teal")), TextBlock(text="Describe it.")),
        ChatMessage(role=MessageRole.ASSISTANT, content="A teal square."),
        user(TextBlock(text="And its shape?")),
    ]
    request = to_vision_request(messages, SETTINGS)
    assert request.image_index == 0
    assert dominant_name(request.image) == "teal"  # type: ignore[arg-type]


def test_the_latest_image_turn_wins_over_older_ones() -> None:
    messages = [
        user(ImageBlock(image=colour_png("teal")), TextBlock(text="First.")),
        ChatMessage(role=MessageRole.ASSISTANT, content="Teal."),
        user(ImageBlock(image=colour_png("navy")), TextBlock(text="Second.")),
    ]
    request = to_vision_request(messages, SETTINGS)
    assert request.image_index == 2
    assert dominant_name(request.image) == "navy"  # type: ignore[arg-type]


def test_two_images_in_one_turn_are_tiled_by_default_or_refused_on_request() -> None:
    message = user(
        ImageBlock(image=colour_png("red")), ImageBlock(image=colour_png("navy")), TextBlock(text="?")
    )
    assert to_vision_request([message], SETTINGS).image.size == (672, 336)  # type: ignore[union-attr]
    with pytest.raises(UnsupportedContentError, match="2 of them.*multi_image='error'") as caught:
        to_vision_request([message], RequestSettings(multi_image="error"))
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(("policy", "expected"), [("first", "red"), ("last", "navy")])
def test_first_or_last_policy_picks_one(policy: str, expected: str) -> None:
    message = user(
        ImageBlock(image=colour_png("red")), ImageBlock(image=colour_png("navy")), TextBlock(text="?")
    )
    request = to_vision_request([message], RequestSettings(multi_image=policy))  # type: ignore[arg-type]
    assert dominant_name(request.image) == expected  # type: ignore[arg-type]


def test_grid_policy_tiles_the_images() -> None:
    blocks = [ImageBlock(image=colour_png(name, size=(60, 60))) for name in ("red", "navy", "lime")]
    request = to_vision_request(
        [user(*blocks, TextBlock(text="Compare."))], RequestSettings(multi_image="grid")
    )
    picture = request.image.to_pil()  # type: ignore[union-attr]
    assert picture.size == (672, 672)  # 2 x 2 cells of 336 px
    colours = {rgb for _, rgb in picture.getcolors(maxcolors=1 << 16)}  # type: ignore[union-attr]
    assert {(230, 25, 75), (0, 0, 128), (210, 245, 60)} <= colours


def test_grid_refuses_urls_it_would_have_to_fetch() -> None:
    blocks = [ImageBlock(url="https://192.0.2.1/a.png"), ImageBlock(image=colour_png("red"))]
    with pytest.raises(InvalidImageError, match="URLs are not fetched"):
        to_vision_request([user(*blocks, TextBlock(text="?"))], RequestSettings(multi_image="grid"))


@pytest.mark.parametrize(
    "block",
    [
        AudioBlock(audio=b"RIFF....WAVEfmt "),
        DocumentBlock(data=b"%PDF-1.4 x", document_mimetype="application/pdf"),
        ThinkingBlock(content="hmm"),
    ],
    ids=["audio", "document", "thinking"],
)
def test_other_blocks_raise_a_clear_value_error(block: object) -> None:
    message = ChatMessage(role=MessageRole.USER, blocks=[block, TextBlock(text="?")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="text and images only"):
        to_vision_request([message], SETTINGS)


def test_cache_points_are_ignored() -> None:
    point = CachePoint(cache_control=CacheControl(type="ephemeral"))
    request = to_vision_request([user(TextBlock(text="Hi"), point)], SETTINGS)  # type: ignore[arg-type]
    assert request.prompt == "Hi"


def test_tool_messages_are_refused_with_advice() -> None:
    messages = [user(TextBlock(text="Hi")), ChatMessage(role=MessageRole.TOOL, content="42")]
    with pytest.raises(UnsupportedContentError, match="LlavaToolSpec"):
        to_vision_request(messages, SETTINGS)


def test_images_outside_user_turns_are_refused(red_png: bytes) -> None:
    messages = [
        ChatMessage(role=MessageRole.ASSISTANT, blocks=[ImageBlock(image=red_png)]),
        user(TextBlock(text="?")),
    ]
    with pytest.raises(UnsupportedContentError, match="user messages only"):
        to_vision_request(messages, SETTINGS)


def test_image_without_a_question_is_refused(red_png: bytes) -> None:
    with pytest.raises(InvalidPromptError, match="empty"):
        to_vision_request([user(ImageBlock(image=red_png))], SETTINGS)

"""VisionRequest validation: every bad setting is refused before anything is sent."""

from __future__ import annotations

import pytest

from llava_bridge import InvalidPromptError, InvalidRequestError, Message, VisionRequest
from llava_bridge.types import MAX_NEW_TOKENS_LIMIT, MAX_PROMPT_CHARS


def test_prompt_shorthand_builds_one_user_turn() -> None:
    request = VisionRequest(prompt="What is this?")
    assert request.messages == (Message(role="user", content="What is this?"),)
    assert request.prompt == "What is this?"
    assert request.max_new_tokens == 256


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompts_are_refused(prompt: str) -> None:
    with pytest.raises(InvalidPromptError, match="empty or whitespace"):
        VisionRequest(prompt=prompt)


@pytest.mark.parametrize("value", [0, -1, MAX_NEW_TOKENS_LIMIT + 1, 10**9])
def test_max_new_tokens_out_of_range(value: int) -> None:
    with pytest.raises(InvalidPromptError, match="between 1 and"):
        VisionRequest(prompt="hi", max_new_tokens=value)


@pytest.mark.parametrize("value", ["abc", "12", 3.5, True, None])
def test_max_new_tokens_must_be_an_int(value: object) -> None:
    with pytest.raises(InvalidPromptError, match="must be an integer"):
        VisionRequest(prompt="hi", max_new_tokens=value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("temperature", 2.5),
        ("top_p", 1.5),
        ("temperature", float("nan")),
        ("top_p", "x"),
    ],
)
def test_sampling_values_are_checked(field: str, value: object) -> None:
    with pytest.raises(InvalidPromptError, match=field):
        VisionRequest(prompt="hi", **{field: value})


def test_stop_accepts_a_string_or_list() -> None:
    assert VisionRequest(prompt="hi", stop="END").stop == ("END",)
    assert VisionRequest(prompt="hi", stop=["a", "b"]).stop == ("a", "b")
    with pytest.raises(InvalidPromptError, match="non-empty strings"):
        VisionRequest(prompt="hi", stop=[""])


def test_conversation_must_end_with_the_user() -> None:
    with pytest.raises(InvalidPromptError, match="last message must be the user's"):
        VisionRequest(messages=[Message(role="user", content="hi"), Message(role="assistant", content="yo")])
    with pytest.raises(InvalidPromptError, match="empty"):
        VisionRequest(messages=[])


def test_a_huge_prompt_is_refused() -> None:
    with pytest.raises(InvalidPromptError, match="shorten it"):
        VisionRequest(prompt="x" * (MAX_PROMPT_CHARS + 1))


def test_prompt_and_messages_together_is_an_error() -> None:
    with pytest.raises(InvalidRequestError, match="either prompt= or messages="):
        VisionRequest(prompt="a", messages=[Message(role="user", content="b")])


def test_image_is_coerced_and_image_turn_defaults_to_latest_user() -> None:
    request = VisionRequest(
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="first"),
            Message(role="assistant", content="ok"),
            Message(role="user", content="second"),
        ],
        image="https://example.com/cat.png",
    )
    assert request.image is not None and request.image.is_url
    assert request.image_index == 3


def test_image_turn_must_be_a_user_turn() -> None:
    messages = [Message(role="system", content="s"), Message(role="user", content="u")]
    with pytest.raises(InvalidRequestError, match="user turn"):
        VisionRequest(messages=messages, image="https://example.com/a.png", image_turn=0)
    with pytest.raises(InvalidRequestError, match="outside"):
        VisionRequest(messages=messages, image="https://example.com/a.png", image_turn=5)


def test_requests_are_frozen() -> None:
    request = VisionRequest(prompt="hi")
    with pytest.raises(Exception, match="frozen"):
        request.max_new_tokens = 3  # type: ignore[misc]


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="unknown field .max_tokens."):
        VisionRequest(prompt="hi", max_tokens=3)  # type: ignore[call-arg]

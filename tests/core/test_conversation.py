"""The one conversation policy: merging, image choice, multi_image, text-only turns, fitting."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from PIL import Image

from llava_bridge import (
    ContextOverflowError,
    ImageInput,
    InvalidImageError,
    InvalidPromptError,
    Message,
    UnsupportedContentError,
    VisionRequest,
)
from llava_bridge.conversation import Turn, build_request, fit_to_context
from llava_bridge.prompts import estimate_tokens
from llava_bridge.types import MAX_PROMPT_CHARS

from .conftest import encode


def picture(rgb: tuple[int, int, int]) -> ImageInput:
    return ImageInput.from_bytes(encode(Image.new("RGB", (40, 30), rgb)))


RED, GREEN, BLUE, GREY, BLACK = (
    picture(c) for c in [(220, 20, 20), (20, 200, 20), (20, 20, 220), (128, 128, 128), (0, 0, 0)]
)


def user(text: str, *images: ImageInput | Callable[[], ImageInput]) -> Turn:
    return Turn("user", text, tuple(images))


def texts(request: VisionRequest) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in request.messages]


# -- merging and empty turns ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("turns", "expected"),
    [
        pytest.param([user("a"), user("b")], [("user", "a\n\nb")], id="two-user-turns-merge"),
        pytest.param(
            [Turn("system", "s1"), Turn("system", "s2"), user("q")],
            [("system", "s1\n\ns2"), ("user", "q")],
            id="system-prompts-merge",
        ),
        pytest.param(
            [user("a"), Turn("assistant", ""), user("b")], [("user", "a\n\nb")], id="empty-turn-dropped"
        ),
        pytest.param(
            [user("a"), Turn("assistant", "x"), Turn("assistant", "y"), user("b")],
            [("user", "a"), ("assistant", "x\n\ny"), ("user", "b")],
            id="answers-merge",
        ),
    ],
)
def test_merging_same_role_turns(turns: list[Turn], expected: list[tuple[str, str]]) -> None:
    assert texts(build_request(turns)) == expected


def test_images_of_merged_turns_are_one_turns_images() -> None:
    request = build_request([user("", RED), user("Compare", GREEN)], multi_image="first")
    assert texts(request) == [("user", "Compare")] and request.image == RED and request.image_index == 0


# -- which image ------------------------------------------------------------------------------


def test_the_latest_user_turn_with_an_image_is_used_and_older_images_left_out() -> None:
    request = build_request([user("one", RED), Turn("assistant", "red"), user("two", BLUE), user("why?")])
    assert request.image == BLUE
    assert request.image_index == 2 and texts(request)[2] == ("user", "two\n\nwhy?")


def test_an_image_outside_a_user_turn_is_refused() -> None:
    with pytest.raises(UnsupportedContentError, match="user messages only"):
        build_request([Turn("assistant", "look", (RED,)), user("?")])


def test_only_the_image_sent_is_made() -> None:
    made: list[str] = []

    def loader(name: str, image: ImageInput) -> Callable[[], ImageInput]:
        return lambda: made.append(name) or image  # type: ignore[func-returns-value]

    request = build_request(
        [user("old", loader("old", RED)), Turn("assistant", "x"), user("new", loader("new", BLUE))]
    )
    assert request.image == BLUE and made == ["new"]


# -- multi_image ------------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "expected"), [("first", RED), ("last", BLUE)])
def test_first_and_last_keep_one_image(policy: str, expected: ImageInput) -> None:
    request = build_request([user("?", RED, GREEN, BLUE)], multi_image=policy)  # type: ignore[arg-type]
    assert request.image == expected


@pytest.mark.parametrize(("count", "size"), [(2, (672, 336)), (3, (672, 672)), (4, (672, 672))])
def test_grid_is_the_default_for_two_to_four_images(count: int, size: tuple[int, int]) -> None:
    images = [RED, GREEN, BLUE, GREY][:count]
    request = build_request([user("?", *images)])
    assert request.image is not None and request.image.size == size
    assert request.image.source == f"grid of {count} images"
    colours = {rgb for _, rgb in request.image.to_pil().getcolors(maxcolors=1 << 16) or []}
    assert {(220, 20, 20), (20, 200, 20)} <= colours


def test_more_than_four_images_for_a_grid_names_the_setting() -> None:
    with pytest.raises(UnsupportedContentError, match="5 of them; multi_image='grid' tiles at most 4"):
        build_request([user("?", RED, GREEN, BLUE, GREY, BLACK)])
    assert build_request([user("?", RED, GREEN, BLUE, GREY, BLACK)], multi_image="last").image == BLACK


def test_error_policy_refuses_several_images_and_names_the_choices() -> None:
    with pytest.raises(UnsupportedContentError, match="multi_image='error'.*'grid'.*'first' or 'last'"):
        build_request([user("?", RED, GREEN)], multi_image="error")
    assert build_request([user("?", RED)], multi_image="error").image == RED


def test_grid_does_not_fetch_urls() -> None:
    with pytest.raises(InvalidImageError, match="URLs are not fetched"):
        build_request([user("?", ImageInput.from_url("https://example.com/a.png"), RED)])


# -- text-only ------------------------------------------------------------------------------


def test_text_only_is_allowed_by_default_and_can_be_refused() -> None:
    assert build_request([user("hi")]).image is None
    with pytest.raises(UnsupportedContentError, match="text_only='allow'"):
        build_request([user("hi")], text_only="error")


def test_an_empty_conversation_is_refused() -> None:
    with pytest.raises(UnsupportedContentError, match="at least one user message"):
        build_request([])


# -- fitting -----------------------------------------------------------------------------------


def history(turns: int, chars: int, *, system: str = "Be brief.") -> VisionRequest:
    messages = [Message(role="system", content=system)]
    for index in range(turns):
        role = "user" if index % 2 == 0 else "assistant"
        messages.append(Message(role=role, content=f"{index}:" + "x" * chars))
    messages.append(Message(role="user", content="And now?"))
    return VisionRequest(messages=messages, image=RED)


def test_a_400_turn_history_of_250k_chars_is_trimmed_not_refused() -> None:
    request = history(400, 625)
    assert sum(len(m.content) for m in request.messages) > 250_000
    fitted, budget = fit_to_context(request)
    assert fitted.messages[0].content == "Be brief." and fitted.messages[-1].content == "And now?"
    assert fitted.messages[1].role == "user"  # never an answer right after the system prompt
    assert budget.dropped_turns > 380 and budget.prompt_tokens <= 4096 - 256
    assert fitted.image == RED and fitted.image_index == len(fitted.messages) - 1


def test_only_a_latest_turn_that_cannot_fit_alone_raises() -> None:
    long = VisionRequest(
        messages=[Message(role="user", content="old " * 50_000), Message(role="user", content="x " * 8000)]
    )
    with pytest.raises(ContextOverflowError, match="Shorten the message"):
        fit_to_context(long)
    old_huge_turn = VisionRequest(
        messages=[
            Message(role="user", content="y" * (MAX_PROMPT_CHARS + 1)),
            Message(role="assistant", content="ok"),
            Message(role="user", content="short"),
        ]
    )
    assert [m.content for m in fit_to_context(old_huge_turn)[0].messages] == ["short"]
    with pytest.raises(InvalidPromptError, match="latest message is 200,001 characters"):
        VisionRequest(prompt="z" * (MAX_PROMPT_CHARS + 1))


def test_a_4_mb_history_trims_quickly() -> None:
    request = history(2000, 2000)
    assert sum(len(m.content) for m in request.messages) > 4_000_000
    started = time.perf_counter()
    fitted, budget = fit_to_context(request)
    assert time.perf_counter() - started < 5.0  # generous: it takes milliseconds
    assert budget.dropped_turns > 1900 and fitted.messages[-1].content == "And now?"


def test_the_token_counter_is_called_per_kept_turn_not_per_history_turn() -> None:
    def counted_fit(request: VisionRequest) -> tuple[int, int]:
        calls: list[str] = []

        def counter(text: str) -> int:
            calls.append(text)
            return estimate_tokens(text)

        fitted, _ = fit_to_context(request, count_tokens=counter)
        return len(calls), len(fitted.messages)

    small_calls, small_kept = counted_fit(history(200, 2000))
    huge_calls, huge_kept = counted_fit(history(20_000, 2000))
    assert small_kept == huge_kept and small_calls == huge_calls  # independent of history length
    assert huge_calls <= huge_kept + 2  # each kept turn once, plus the first that does not fit

"""Client-side stop sequences, whole and streamed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llava_bridge.stops import StopScanner, cut_at_stop


def test_cut_at_the_earliest_stop() -> None:
    assert cut_at_stop("a cat. END and more STOP", ["STOP", "END"]) == ("a cat. ", True)
    assert cut_at_stop("no stops here", ["END"]) == ("no stops here", False)
    assert cut_at_stop("anything", []) == ("anything", False)


def stream(text: str, sizes: list[int], stops: list[str]) -> tuple[str, bool]:
    scanner = StopScanner(stops)
    out, position = [], 0
    for size in sizes:
        out.append(scanner.feed(text[position : position + size]))
        position += size
    out.append(scanner.feed(text[position:]))
    out.append(scanner.flush())
    return "".join(out), scanner.stopped


def test_a_stop_split_across_chunks_is_caught() -> None:
    assert stream("hello <|eot_id|> tail", [3, 5, 2, 4], ["<|eot_id|>"]) == ("hello ", True)


def test_held_back_text_is_released_when_no_stop_follows() -> None:
    assert stream("the END is not ENDING", [], ["ENDX"]) == ("the END is not ENDING", False)
    scanner = StopScanner(["STOP"])
    assert scanner.feed("abc ST") == "abc "
    assert scanner.feed("AR") == "STAR"
    assert scanner.flush() == ""


@given(
    text=st.text(alphabet="abcSTOP <>|", max_size=60),
    sizes=st.lists(st.integers(min_value=0, max_value=7), max_size=12),
    stops=st.lists(st.sampled_from(["STOP", "<|", "a b", "OO"]), max_size=3),
)
def test_streaming_equals_whole_text(text: str, sizes: list[int], stops: list[str]) -> None:
    assert stream(text, sizes, stops) == cut_at_stop(text, stops)


@pytest.mark.parametrize("stops", [["x"], ["xyz", "y"]])
def test_nothing_is_emitted_after_a_stop(stops: list[str]) -> None:
    scanner = StopScanner(stops)
    scanner.feed("abxyz")
    assert scanner.stopped
    assert scanner.feed("more") == "" and scanner.flush() == ""

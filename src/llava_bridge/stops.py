"""Stop sequences applied on the client, for whole texts and for streams."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopScanner", "cut_at_stop"]

LLAMA3_STOP_STRINGS = ("<|eot_id|>", "<|end_of_text|>")
"""Special tokens that end an answer if a server lets them through as text."""


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)


class StopScanner:
    """Feeds streamed deltas through; holds back text that may begin a stop string.

    `feed` returns the text that is safe to emit; once a stop string is seen,
    `stopped` is true and nothing more is emitted. `flush` returns what was held
    back when the stream ends without a stop.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        if not self._stops:
            return delta
        buffer = self._held + delta
        text, found = cut_at_stop(buffer, self._stops)
        if found:
            self.stopped = True
            self._held = ""
            return text
        keep = self._longest_partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_partial_suffix(self, buffer: str) -> int:
        """Length of the longest suffix of buffer that is a proper prefix of a stop."""
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:size]):
                    best = size
                    break
        return best

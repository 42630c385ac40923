"""A small IO-free decoder for server-sent events (text/event-stream), line by line.

Shared by the fal status and output streams and OpenAI-compatible streaming.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SseDecoder", "SseEvent"]


@dataclass(frozen=True)
class SseEvent:
    """One server-sent event."""

    data: str
    event: str = "message"


class SseDecoder:
    """Feed lines (without their line ending); get an `SseEvent` when a blank line ends one.

    Comments (``:`` lines, used as keep-alives) and ``id``/``retry`` fields are skipped.
    """

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""

    def feed(self, line: str) -> SseEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def finish(self) -> SseEvent | None:
        """An event left without its closing blank line when the stream ended."""
        return self._dispatch()

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SseEvent(data="\n".join(self._data), event=self._event or "message")
        self._data, self._event = [], ""
        return event

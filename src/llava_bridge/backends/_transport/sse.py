"""A small IO-free decoder for server-sent events (text/event-stream), line by line.

Shared by the fal status and output streams and OpenAI-compatible streaming.
"""

from __future__ import annotations

import codecs
import re
from collections import deque
from dataclasses import dataclass

__all__ = ["SseDecoder", "SseEvent", "SseParser"]

_NEWLINE = re.compile(r"\r\n|\r|\n")


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


class SseParser:
    """Bytes in, events out: UTF-8 decoding and line splitting (LF, CRLF or CR, across any
    chunking) in front of an `SseDecoder`."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")("replace")
        self._tail = ""
        self._lines: deque[str] = deque()
        self._events = SseDecoder()
        self._ended = False
        self.done = False
        """The stream ended and every event in it was handed out."""

    def feed(self, data: bytes) -> None:
        """What the stream gave next; ``b""`` for its end."""
        if self._ended:
            return
        text = self._tail + self._text.decode(data, final=not data)
        if not data:
            self._ended = True
        elif text.endswith("\r"):  # maybe half of a CRLF: wait for the next byte
            text, self._tail = text[:-1], "\r"
        else:
            self._tail = ""
        lines = _NEWLINE.split(text)
        if data:
            self._tail = lines.pop() + self._tail
        elif not lines[-1]:
            lines.pop()
        self._lines.extend(lines)

    def next_event(self) -> SseEvent | None:
        """The next whole event; None when more bytes are needed (or `done`)."""
        while self._lines:
            event = self._events.feed(self._lines.popleft())
            if event is not None:
                return event
        if self._ended and not self.done:
            self.done = True
            return self._events.finish()
        return None

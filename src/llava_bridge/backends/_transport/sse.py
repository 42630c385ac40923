"""A small IO-free decoder for server-sent events (text/event-stream), line by line.

Shared by the fal status and output streams and OpenAI-compatible streaming.
"""

from __future__ import annotations

import codecs
import re
from collections import deque
from dataclasses import dataclass

from llava_bridge.backends._transport.bodies import ResponseLimitExceeded

__all__ = ["MAX_LINE", "SseDecoder", "SseEvent", "SseParser"]

_NEWLINE = re.compile(r"\r\n|\r|\n")
MAX_LINE = 1024 * 1024
"""The longest line (in characters) an event stream may send."""


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
    chunking) in front of an `SseDecoder`.

    Linear in the bytes fed, however long a line grows; a line longer than `max_line`
    characters raises `ResponseLimitExceeded`."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._text = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending: list[str] = []
        """The pieces of the line not ended yet."""
        self._pending_size = 0
        self._after_cr = False
        """The last piece ended with CR: a LF first in the next one belongs to it."""
        self._lines: deque[str] = deque()
        self._events = SseDecoder()
        self._ended = False
        self.done = False
        """The stream ended and every event in it was handed out."""

    def feed(self, data: bytes) -> None:
        """What the stream gave next; ``b""`` for its end."""
        if self._ended:
            return
        text = self._text.decode(data, final=not data)
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = text.endswith("\r")
        if text:
            lines = _NEWLINE.split(text)
            if len(lines) == 1:
                self._pending.append(text)
                self._pending_size += len(text)
            else:
                if self._pending:
                    lines[0] = "".join(self._pending) + lines[0]
                tail = lines.pop()
                self._pending, self._pending_size = ([tail], len(tail)) if tail else ([], 0)
                if len(text) + self._pending_size > self.max_line:  # a long line may be among them
                    self._check(max(map(len, lines)))
                self._lines.extend(lines)
            self._check(self._pending_size)
        if not data:
            self._ended = True
            if self._pending:
                self._lines.append("".join(self._pending))
                self._pending, self._pending_size = [], 0

    def _check(self, size: int) -> None:
        if size > self.max_line:
            self._pending, self._pending_size = [], 0
            raise ResponseLimitExceeded(
                f"the event stream sent a line over {self.max_line} characters; "
                "the server is not sending server-sent events"
            )

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

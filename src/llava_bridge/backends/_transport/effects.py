"""The vocabulary between the IO-free flows (fal, OpenAI-compatible) and their sync/async drivers.

A flow is a generator. It yields an *effect* (an HTTP call to make, a stream to
open or read, a pause, a value to hand out, CPU work to run) and receives the
*reply*. Drivers (`drivers`) perform effects through a transport and time/asyncio;
the flows never touch a socket or a clock of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

from llava_bridge.backends._transport.bodies import loads
from llava_bridge.backends._transport.sse import SseEvent
from llava_bridge.retry import Failure, Phase

__all__ = [
    "CloseStream",
    "Compute",
    "Effect",
    "Emit",
    "Flow",
    "HttpRequest",
    "HttpResponse",
    "NextEvent",
    "OpenStream",
    "Reply",
    "Sleep",
    "SseEvent",
    "StreamEnd",
    "TransportFailure",
]


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request, with its timeouts in seconds (None: no limit)."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    json_body: Any = None
    content: bytes | None = None
    connect_timeout: float | None = 10.0
    read_timeout: float | None = 60.0
    """The longest wait for any one read."""
    total_timeout: float | None = None
    """The whole exchange (connect, send, head and body; for a stream, every read of it)
    must be over within this many seconds: a server dripping bytes cannot stretch it."""
    label: str = ""
    """What the call is (``submit``, ``status``...), for logs and messages."""
    phase: Phase = Phase.READ


@dataclass(frozen=True)
class HttpResponse:
    """A whole HTTP response (for a stream: its status line and headers; body only on errors)."""

    status_code: int
    headers: Mapping[str, str]
    """Header names lower-cased."""
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        """The body as JSON; raises `BadBody` (a ValueError) when it is not JSON or is
        nested too deeply."""
        return loads(self.body)

    def json_or_text(self) -> Any:
        """The body as JSON when it parses, else as text (for error reports)."""
        try:
            return self.json()
        except ValueError:
            return self.body.decode("utf-8", "replace")


@dataclass(frozen=True)
class TransportFailure:
    """The call failed below HTTP: no response, or an unusable one."""

    failure: Failure
    message: str
    timed_out: bool = False
    fatal: bool = False
    """A mistake in the request itself (bad URL scheme), or an answer over a limit: never retried."""
    over_limit: bool = False
    """The answer broke a client limit (body size, SSE line length); `fatal` too."""


@dataclass(frozen=True)
class Sleep:
    """Wait this many seconds."""

    seconds: float


@dataclass(frozen=True)
class OpenStream:
    """Send a request and keep its response open to read server-sent events.

    Reply: an `HttpResponse` (body read only when the status is not 2xx) or a
    `TransportFailure`. One stream is open at a time.
    """

    request: HttpRequest


@dataclass(frozen=True)
class NextEvent:
    """Read the next server-sent event of the open stream.

    Reply: an `SseEvent`, `StreamEnd`, or a `TransportFailure`.
    """

    timeout: float | None = None
    """A shorter limit than the stream's read timeout for each read of this event (what is
    left of a deadline); a read that takes longer is a timed-out `TransportFailure`."""


@dataclass(frozen=True)
class CloseStream:
    """Close the open stream (no reply).

    With `drain`, the server is expected to end the stream now (it sent COMPLETED):
    a driver may read its end for a moment first, so that the connection can be reused.
    """

    drain: bool = False


@dataclass(frozen=True)
class StreamEnd:
    """The server closed the stream cleanly."""


@dataclass(frozen=True)
class Emit:
    """Hand a value out: a chunk of a streamed answer, or a queue update."""

    value: Any


@dataclass(frozen=True)
class Compute:
    """Run CPU-bound work (image resizing); async drivers run it in a thread."""

    function: Callable[[], Any]


Effect: TypeAlias = HttpRequest | OpenStream | NextEvent | CloseStream | Sleep | Emit | Compute
Reply: TypeAlias = HttpResponse | TransportFailure | SseEvent | StreamEnd | Any
T = TypeVar("T")
Flow: TypeAlias = Generator[Effect, Any, T]
"""A flow that returns a T; replies are sent back typed `Any` and narrowed by the flow."""

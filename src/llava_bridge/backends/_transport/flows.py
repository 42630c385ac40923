"""One HTTP call, with the core retry policy, a deadline and typed errors (IO-free).

Shared by the fal and OpenAI-compatible flows; messages name the server by its URL's
origin, never a particular service."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

from llava_bridge.backends._transport.effects import (
    Effect,
    HttpRequest,
    HttpResponse,
    OpenStream,
    Sleep,
    TransportFailure,
)
from llava_bridge.errors import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    ResponseTooLargeError,
    ServerUnreachableError,
    status_error,
)
from llava_bridge.retry import (
    Failure,
    Phase,
    backoff_delay,
    retry_delay,
    should_retry_failure,
    should_retry_status,
)

__all__ = [
    "Abandoned",
    "Deadline",
    "DeadlineHit",
    "CallSettings",
    "call",
    "open_stream",
    "raise_for_status",
    "unexpected_answer",
]

logger = logging.getLogger("llava_bridge.fal")

MAX_ERROR_TEXT = 1000
"""Characters of a non-JSON error body (an nginx page) kept in an error."""


class DeadlineHit(Exception):
    """Internal: the caller's client_timeout ran out during a call."""


class Abandoned(Exception):
    """Internal: thrown into a flow when its caller stopped waiting (task cancelled, Ctrl-C)."""


@dataclass(frozen=True)
class Deadline:
    """A wall-clock limit on a whole operation; `at` is None for no limit."""

    at: float | None = None
    timeout: float | None = None
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def after(cls, timeout: float | None, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(None if timeout is None else clock() + timeout, timeout, clock)

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - self.clock()

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def bound(self, seconds: float | None) -> float | None:
        """`seconds` shortened to what is left (None: no limit)."""
        left = self.remaining()
        if left is None:
            return seconds
        return max(left, 0.0) if seconds is None else max(min(seconds, left), 0.0)


class CallSettings(Protocol):
    """What `call` and `open_stream` read from a backend's settings."""

    @property
    def max_attempts(self) -> int: ...

    @property
    def rng(self) -> random.Random: ...

    @property
    def submit_grace(self) -> float:
        """Seconds past the deadline a submit may take to read its request id."""
        ...


StatusRule = Callable[[HttpResponse, Phase], bool]


def default_status_rule(response: HttpResponse, phase: Phase) -> bool:
    return should_retry_status(response.status_code, response.headers, phase)


def call(
    config: CallSettings,
    deadline: Deadline,
    request: HttpRequest,
    *,
    expect_json: bool = True,
    retry_status: StatusRule = default_status_rule,
) -> Generator[Effect, Any, tuple[HttpResponse, Any]]:
    """Send `request`, retrying as the core policy allows; return (response, parsed JSON).

    An error status is returned, not raised (the caller knows the request id and the
    endpoint for the message). A 2xx body that is not JSON counts as a broken
    connection. Transport failures that may not be retried raise; so does the deadline.
    """
    attempt = 0
    grace = config.submit_grace if request.label == "submit" else 0.0
    while True:
        attempt += 1
        reply = yield _bounded(request, deadline, grace)
        data: Any = None
        if isinstance(reply, HttpResponse) and reply.ok and expect_json:
            try:
                data = reply.json()
            except ValueError:
                reply = TransportFailure(Failure.AFTER_SEND, "the response body was not valid JSON")
        delay = _next_delay(config, deadline, request, reply, attempt, retry_status)
        if delay is None:
            return reply, data
        yield Sleep(delay)


def open_stream(
    config: CallSettings, deadline: Deadline, request: HttpRequest
) -> Generator[Effect, Any, HttpResponse]:
    """Open an SSE response, retrying as `call` does; an error status is returned."""
    attempt = 0
    while True:
        attempt += 1
        reply = yield OpenStream(_bounded(request, deadline))
        delay = _next_delay(config, deadline, request, reply, attempt, default_status_rule)
        if delay is None:
            assert isinstance(reply, HttpResponse)
            return reply
        yield Sleep(delay)


def _bounded(request: HttpRequest, deadline: Deadline, grace: float = 0.0) -> HttpRequest:
    """`request` with its timeouts cut to the deadline (the read gets `grace` more); raises
    DeadlineHit when the deadline has passed before sending. The whole exchange, body
    reads included, must end by then too (`total_timeout`)."""
    if deadline.expired():
        raise DeadlineHit
    if deadline.at is None:
        return request
    read_left = (deadline.bound(None) or 0.0) + grace
    return replace(
        request,
        connect_timeout=deadline.bound(request.connect_timeout),
        read_timeout=read_left if request.read_timeout is None else min(request.read_timeout, read_left),
        total_timeout=read_left if request.total_timeout is None else min(request.total_timeout, read_left),
    )


def _next_delay(
    config: CallSettings,
    deadline: Deadline,
    request: HttpRequest,
    reply: Any,
    attempt: int,
    retry_status: StatusRule,
) -> float | None:
    """Seconds to wait before the next attempt; None to hand `reply` back. Raises when it must."""
    if isinstance(reply, TransportFailure):
        if deadline.expired():
            raise DeadlineHit
        if reply.over_limit:
            raise ResponseTooLargeError(
                f"The {request.label or request.method} request to {request.url} failed: {reply.message}."
            )
        if reply.fatal:
            raise ConfigurationError(f"Cannot call {request.url}: {reply.message}.")
        if attempt >= config.max_attempts or not should_retry_failure(reply.failure, request.phase):
            raise _transport_error(reply, request, attempt)
        delay: float | None = backoff_delay(attempt, config.rng)
        why = reply.message
    else:
        assert isinstance(reply, HttpResponse)
        if reply.ok or attempt >= config.max_attempts or not retry_status(reply, request.phase):
            return None
        delay = retry_delay(attempt, reply.headers, config.rng)
        if delay is None:
            return None  # Retry-After asks for longer than we wait
        why = f"HTTP {reply.status_code}"
    logger.debug("%s to %s: %s; retry %d in %.2fs", request.label, _origin(request.url), why, attempt, delay)
    return deadline.bound(delay) or 0.0


def _origin(url: str) -> str:
    """`scheme://host:port` of `url`, without userinfo."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _transport_error(reply: TransportFailure, request: HttpRequest, attempts: int) -> APIConnectionError:
    what = request.label or request.method
    if request.phase is Phase.SUBMIT and reply.failure is Failure.AFTER_SEND:
        return AmbiguousSubmitError(
            f"The {what} request to {request.url} failed after it was sent ({reply.message}). "
            f"The job may be queued or running on the server at {_origin(request.url)} (and may be "
            "billed); it was not re-sent so that it does not run twice. Check the server's dashboard, "
            "logs or your webhook before retrying."
        )
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if reply.failure is Failure.NOT_SENT and not reply.timed_out:
        reason = f"the {what} request failed{tries}: {reply.message}"
        return ServerUnreachableError(
            f"Cannot reach the server at {_origin(request.url)}: {reason}. "
            "Check that the server is running and the URL is right.",
            url=request.url,
            reason=reason,
        )
    cls = APITimeoutError if reply.timed_out else APIConnectionError
    return cls(
        f"The {what} request to {request.url} failed{tries}: {reply.message}. "
        "Check the network and the URL, or raise the timeout."
    )


def raise_for_status(
    response: HttpResponse, *, request_id: str | None = None, endpoint: str | None = None
) -> None:
    """Raise the typed error for a non-2xx response."""
    if response.ok:
        return
    raise error_for(response, request_id=request_id, endpoint=endpoint)


def error_for(
    response: HttpResponse, *, request_id: str | None = None, endpoint: str | None = None
) -> APIStatusError:
    body = response.json_or_text()
    if isinstance(body, str) and len(body) > MAX_ERROR_TEXT:
        body = body[:MAX_ERROR_TEXT] + "..."
    error_type = response.headers.get("x-fal-error-type")
    return status_error(
        response.status_code,
        body,
        request_id=request_id or response.headers.get("x-fal-request-id"),
        error_type=error_type,
        endpoint=endpoint,
    )


def unexpected_answer(response: HttpResponse, message: str) -> APIStatusError:
    """An error for a 2xx answer whose body is not what the protocol promises."""
    return APIStatusError(
        f"{message} (HTTP {response.status_code}); the server may not speak fal's protocol. "
        "Check base_url/model=.",
        status_code=response.status_code,
        request_id=response.headers.get("x-fal-request-id"),
        body=response.json_or_text(),
    )


def finite_positive(name: str, value: float | None) -> float | None:
    """Check an optional seconds value."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"{name} must be a positive number of seconds, not {value!r}.")
    return float(value)

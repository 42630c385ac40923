"""What `OpenAICompatBackend` does, as IO-free flows over the `_transport` seam.

Each flow prepares the payload (as `Compute`: image work stays off the event loop),
sends one POST through `call` / `open_stream` (the core retry policy: a completion
is re-sent only when it cannot have reached the server), and turns the answer into a
result or chunks. The sync and async drivers perform the effects.

A server that fails on the `stop` field is asked once more without it while the backend
is still learning (`StopSupport`); stop strings are cut on the client either way. What
such a failure looks like (`transformers serve` with a LLaVA processor): HTTP 500 with
no OpenAI error object (a plain "Internal Server Error"), or a stream whose first event
is an error given as bare text. A server that explains its 500 is believed.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import partial
from typing import Any, TypeVar

from llava_bridge.backends._transport.effects import (
    CloseStream,
    Compute,
    Effect,
    Emit,
    HttpResponse,
    NextEvent,
    SseEvent,
    TransportFailure,
)
from llava_bridge.backends._transport.flows import Deadline, DeadlineHit, call, open_stream
from llava_bridge.backends.image_urls.options import with_fetched_image
from llava_bridge.backends.openai_compat.settings import OpenAISettings
from llava_bridge.backends.openai_compat.wire import (
    Call,
    StreamAssembler,
    broken_stream,
    build_call,
    connection_error,
    error_from_response,
    parse_completion,
)
from llava_bridge.errors import APIConnectionError, APIStatusError, DeadlineExceededError
from llava_bridge.types import VisionChunk, VisionRequest, VisionResult

__all__ = ["generate_flow", "stream_flow"]

T = TypeVar("T")

STOP_FAILURE_STATUS = 500
"""The status of a server that cannot apply `stop` (`transformers serve` with a processor)."""


def _prepare(settings: OpenAISettings, request: VisionRequest, stream: bool) -> Call:
    """The call to send (blocking: image work and URL fetches; a `Compute` step)."""
    if settings.fetcher is not None:
        request = with_fetched_image(request, settings.fetcher)
    return build_call(
        request,
        model=settings.model,
        stream=stream,
        context_window=settings.context_window,
        resize=settings.resize,
        extra_body=settings.extra_body,
        send_stop=settings.stop_support.sending,
    )


def _in_our_words(flow: Generator[Effect, Any, T], url: str) -> Generator[Effect, Any, T]:
    """Run a transport flow; a transport error it raises is re-raised in this backend's words
    (naming the server and whether the completion may be running), from the last failure."""
    last: TransportFailure | None = None
    reply: Any = None
    try:
        while True:
            effect = flow.send(reply)
            reply = yield effect
            if isinstance(reply, TransportFailure):
                last = reply
    except StopIteration as stop:
        result: T = stop.value
        return result
    except APIConnectionError:
        if last is None:
            raise
        raise connection_error(last, url) from None
    finally:
        flow.close()


def _out_of_time(settings: OpenAISettings, url: str) -> DeadlineExceededError:
    shown = f"{settings.total_timeout:g}" if settings.total_timeout is not None else "?"
    return DeadlineExceededError(
        f"No complete answer from {url} within total_timeout={shown}s; the server may still be "
        "generating it. Raise total_timeout= for longer answers.",
        timeout=settings.total_timeout or 0.0,
        request_id=None,
    )


def _retry_without_stop(settings: OpenAISettings, prepared: Call, error: APIStatusError) -> bool:
    """Whether `error` may be the server failing on `stop`: an unexplained HTTP 500 (no
    error type) or one that names `stop`, to a request that carried it, while learning."""
    unexplained = error.error_type is None or "stop" in str(error).lower()
    return (
        error.status_code == STOP_FAILURE_STATUS
        and unexplained
        and prepared.sends_stop
        and settings.stop_support.learning
    )


def generate_flow(settings: OpenAISettings, request: VisionRequest) -> Generator[Effect, Any, VisionResult]:
    """One non-streamed chat completion."""
    deadline = Deadline.after(settings.total_timeout)
    prepared: Call = yield Compute(partial(_prepare, settings, request, False))
    post = settings.post(prepared.payload)
    try:
        response, _ = yield from _in_our_words(call(settings, deadline, post, expect_json=False), post.url)
        if not response.ok and _retry_without_stop(settings, prepared, _error(response)):
            retried = prepared.without_stop()
            again = settings.post(retried.payload)
            response, _ = yield from _in_our_words(
                call(settings, deadline, again, expect_json=False), post.url
            )
            if response.ok:
                settings.stop_support.refused(post.url)
                prepared = retried
    except DeadlineHit:
        raise _out_of_time(settings, post.url) from None
    if not response.ok:
        raise _error(response)
    return parse_completion(response.body, prepared, post.url)


def _error(response: HttpResponse) -> APIStatusError:
    return error_from_response(response.status_code, response.headers, response.body)


def _open(
    settings: OpenAISettings, deadline: Deadline, prepared: Call
) -> Generator[Effect, Any, tuple[StreamAssembler, str | None]]:
    """Open the stream and read up to its first text: (the assembler, that text). A server
    error before any text, on a request with `stop`, while learning: open it once more
    without `stop`."""
    post = settings.post(prepared.payload)
    response: HttpResponse = yield from _in_our_words(open_stream(settings, deadline, post), post.url)
    if not response.ok:
        error = _error(response)
        if not _retry_without_stop(settings, prepared, error):
            raise error
    else:
        assembler = StreamAssembler(prepared, post.url)
        try:
            delta = yield from _first_text(assembler, settings, deadline, post.url)
            return assembler, delta
        except APIStatusError as error:
            if not _retry_without_stop(settings, prepared, error):
                raise
            yield CloseStream()
    retried = prepared.without_stop()
    assembler, delta = yield from _open(settings, deadline, retried)
    settings.stop_support.refused(post.url)
    return assembler, delta


def _next_text(
    assembler: StreamAssembler, settings: OpenAISettings, deadline: Deadline, url: str
) -> Generator[Effect, Any, str | None]:
    """The text of the next event ("" for none); None when the stream ended."""
    event = yield NextEvent()
    if isinstance(event, TransportFailure):
        if deadline.expired():
            raise _out_of_time(settings, url)
        raise broken_stream(event, url)
    if not isinstance(event, SseEvent):
        return None  # the server ended the stream
    return assembler.feed(event.data)


def _first_text(
    assembler: StreamAssembler, settings: OpenAISettings, deadline: Deadline, url: str
) -> Generator[Effect, Any, str | None]:
    """Read until the first text, the end, or a stop; an error event raises."""
    while not assembler.done:
        delta = yield from _next_text(assembler, settings, deadline, url)
        if delta is None or delta:
            return delta
    return ""


def stream_flow(settings: OpenAISettings, request: VisionRequest) -> Generator[Effect, Any, None]:
    """A streamed chat completion: emit a chunk per piece of safe text; the last has the result."""
    deadline = Deadline.after(settings.total_timeout)
    prepared: Call = yield Compute(partial(_prepare, settings, request, True))
    url = settings.url
    try:
        assembler, delta = yield from _open(settings, deadline, prepared)
    except DeadlineHit:
        raise _out_of_time(settings, url) from None
    while delta is not None:
        if delta:
            yield Emit(VisionChunk(delta=delta))
        if assembler.done:
            break
        delta = yield from _next_text(assembler, settings, deadline, url)
    yield CloseStream(drain=not assembler.cut_short)
    assembler.check_complete()
    yield Emit(assembler.finish())

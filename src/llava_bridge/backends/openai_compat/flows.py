"""What `OpenAICompatBackend` does, as IO-free flows over the `_transport` seam.

Each flow prepares the payload (as `Compute`: image work stays off the event loop),
sends one POST through `call` / `open_stream` (the core retry policy: a completion
is re-sent only when it cannot have reached the server), and turns the answer into a
result or chunks. The sync and async drivers perform the effects.
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
    NextEvent,
    SseEvent,
    TransportFailure,
)
from llava_bridge.backends._transport.flows import Deadline, call, open_stream
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
from llava_bridge.errors import APIConnectionError
from llava_bridge.types import VisionChunk, VisionRequest, VisionResult

__all__ = ["generate_flow", "stream_flow"]

T = TypeVar("T")


def _prepare(settings: OpenAISettings, request: VisionRequest, stream: bool) -> Call:
    return build_call(
        request,
        model=settings.model,
        stream=stream,
        context_window=settings.context_window,
        resize=settings.resize,
        extra_body=settings.extra_body,
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


def generate_flow(settings: OpenAISettings, request: VisionRequest) -> Generator[Effect, Any, VisionResult]:
    """One non-streamed chat completion."""
    prepared: Call = yield Compute(partial(_prepare, settings, request, False))
    post = settings.post(prepared.payload)
    response, _ = yield from _in_our_words(call(settings, Deadline(), post, expect_json=False), post.url)
    if not response.ok:
        raise error_from_response(response.status_code, response.headers, response.body)
    return parse_completion(response.body, prepared, post.url)


def stream_flow(settings: OpenAISettings, request: VisionRequest) -> Generator[Effect, Any, None]:
    """A streamed chat completion: emit a chunk per piece of safe text; the last has the result."""
    prepared: Call = yield Compute(partial(_prepare, settings, request, True))
    post = settings.post(prepared.payload)
    response = yield from _in_our_words(open_stream(settings, Deadline(), post), post.url)
    if not response.ok:
        raise error_from_response(response.status_code, response.headers, response.body)
    assembler = StreamAssembler(prepared, post.url)
    while not assembler.done:
        event = yield NextEvent()
        if isinstance(event, TransportFailure):
            raise broken_stream(event, post.url)
        if not isinstance(event, SseEvent):
            break  # the server ended the stream
        delta = assembler.feed(event.data)
        if delta:
            yield Emit(VisionChunk(delta=delta))
    yield CloseStream(drain=not assembler.cut_short)
    assembler.check_complete()
    yield Emit(assembler.finish())

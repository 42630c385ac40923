"""OpenAICompatBackend: sync and async paths give the same results, for every public method.

Each case runs once through generate/stream and once through agenerate/astream against
the same local OpenAI-compatible server (with the same scripted faults), and compares the
outcome (result, chunks, or error class and message) and what the server received.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from llava_bridge import ImageInput, LlavaError, Message, VisionChunk, VisionRequest, VisionResult
from llava_bridge.backends.openai_compat.backend import OpenAICompatBackend

from .conftest import colour_image
from .openai_test_server import OpenAITestServer


def _result(result: VisionResult) -> dict[str, Any]:
    """The result without its timings, which differ from run to run."""
    dumped = result.model_dump()
    dumped["metrics"] = sorted(dumped["metrics"])
    return dumped


def _chunks(chunks: list[VisionChunk]) -> list[Any]:
    last = chunks[-1].result
    return [c.delta for c in chunks] + ([_result(last)] if last is not None else [])


Sync = Callable[[OpenAICompatBackend], Any]
Async = Callable[[OpenAICompatBackend], Awaitable[Any]]


def _generate(request: VisionRequest) -> tuple[Sync, Async]:
    async def run(b: OpenAICompatBackend) -> Any:
        return _result(await b.agenerate(request))

    return (lambda b: _result(b.generate(request))), run


def _stream(request: VisionRequest) -> tuple[Sync, Async]:
    async def run(b: OpenAICompatBackend) -> Any:
        return _chunks([c async for c in b.astream(request)])

    return (lambda b: _chunks(list(b.stream(request)))), run


def _stream_first(request: VisionRequest) -> tuple[Sync, Async]:
    """Read one chunk and stop: the connection is given up early on both paths."""

    def sync(b: OpenAICompatBackend) -> Any:
        stream = b.stream(request)
        first = next(stream).delta
        stream.close()
        return first, _result(b.generate(request))

    async def run(b: OpenAICompatBackend) -> Any:
        stream = b.astream(request)
        first = (await anext(stream)).delta
        await stream.aclose()
        return first, _result(await b.agenerate(request))

    return sync, run


ASK = VisionRequest(prompt="What is this?", image=colour_image(1))
CHAT = VisionRequest(
    messages=(
        Message(role="system", content="Be brief."),
        Message(role="user", content="Look at this."),
        Message(role="assistant", content="OK."),
        Message(role="user", content="What colour?"),
    ),
    image=colour_image(2, size=(1600, 1200)),
    image_turn=1,
    max_new_tokens=50,
    temperature=0.2,
    top_p=0.9,
)
TEXT = VisionRequest(prompt="hi", image=ImageInput.from_url("https://example.com/a.png"))
STOP = VisionRequest(prompt="What is this?", image=colour_image(1), stop=("You said",))
SHORT = VisionRequest(prompt="What is this?", max_new_tokens=3)

Setup = Callable[[OpenAITestServer], None]
Case = tuple[dict[str, Any], Setup, tuple[Sync, Async]]


def _none(server: OpenAITestServer) -> None:
    return None


def _fail(kind: str, count: int = 1, **options: Any) -> Setup:
    return lambda server: server.fail_next(kind, count, **options)


def _leak(server: OpenAITestServer) -> None:
    server.leak_stop_tokens = True


def _key(server: OpenAITestServer) -> None:
    server.api_key = "sk-right"


CASES: dict[str, Case] = {
    "generate": ({}, _none, _generate(ASK)),
    "generate-chat-big-image": ({}, _none, _generate(CHAT)),
    "generate-url-image": ({}, _none, _generate(TEXT)),
    "generate-length": ({}, _none, _generate(SHORT)),
    "generate-user-stop": ({}, _none, _generate(STOP)),
    "generate-leaked-stops": ({}, _leak, _generate(ASK)),
    "generate-extra-body": ({"extra_body": {"seed": 7}}, _none, _generate(ASK)),
    "stream": ({}, _none, _stream(ASK)),
    "stream-chat": ({}, _none, _stream(CHAT)),
    "stream-user-stop": ({}, _none, _stream(STOP)),
    "stream-leaked-stops": ({}, _leak, _stream(ASK)),
    "stream-given-up-early": ({}, _none, _stream_first(ASK)),
    "api-key-accepted": ({"api_key": "sk-right"}, _key, _generate(ASK)),
    "api-key-refused": ({"api_key": "sk-wrong"}, _key, _stream(ASK)),
    "429-retried": ({}, _fail("status", 2, status=429, headers={"retry-after": "0"}), _generate(ASK)),
    "503-retried-stream": ({}, _fail("status", status=503, headers={"retry-after": "0"}), _stream(ASK)),
    "429-given-up": ({}, _fail("status", 3, status=429, headers={"retry-after": "0"}), _generate(ASK)),
    "400": ({}, _fail("status", status=400, message="bad image"), _generate(ASK)),
    "404-stream": ({}, _fail("status", status=404, message="no model"), _stream(ASK)),
    "500": ({}, _fail("status", status=500, message="oom"), _generate(ASK)),
    "dropped-after-send": ({}, _fail("drop"), _generate(ASK)),
    "dropped-stream": ({}, _fail("drop"), _stream(ASK)),
    "stream-broken-midway": ({}, _fail("break_stream"), _stream(ASK)),
    "stream-ends-early": ({}, _fail("truncate"), _stream(ASK)),
    "read-timeout": ({"timeout": 0.3}, _fail("delay", seconds=1.5), _generate(ASK)),
    "total-timeout-stream": ({"total_timeout": 0.3}, _fail("delay", seconds=1.5), _stream(ASK)),
    "stop-learned": ({}, _fail("unexplained"), _generate(ASK)),
    "stop-learned-stream": ({}, _fail("error_event"), _stream(ASK)),
    "stop-not-the-cause": ({}, _fail("unexplained", 2), _generate(ASK)),
    "stop-never-sent": ({"send_stop": False}, _none, _stream(STOP)),
}


def _outcome_sync(fn: Sync, backend: OpenAICompatBackend) -> Any:
    try:
        return fn(backend)
    except LlavaError as exc:
        return type(exc).__name__, str(exc)


async def _outcome_async(fn: Async, backend: OpenAICompatBackend) -> Any:
    try:
        return await fn(backend)
    except LlavaError as exc:
        return type(exc).__name__, str(exc)


def _received(server: OpenAITestServer) -> list[Any]:
    return [
        (body, headers.get("authorization"))
        for body, headers in zip(server.requests, server.headers, strict=True)
    ]


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer() as running:
        yield running


@pytest.mark.parametrize("name", list(CASES))
async def test_sync_and_async_agree(name: str, server: OpenAITestServer) -> None:
    options, setup, (sync_fn, async_fn) = CASES[name]
    options = {"max_retries": 2, **options}

    server.reset()
    setup(server)
    with OpenAICompatBackend(server.base_url, **options) as backend:
        sync_outcome = _outcome_sync(sync_fn, backend)
    sync_received = _received(server)

    server.reset()
    setup(server)
    async with OpenAICompatBackend(server.base_url, **options) as backend:
        async_outcome = await _outcome_async(async_fn, backend)
    async_received = _received(server)

    assert async_outcome == sync_outcome
    assert async_received == sync_received
    assert sync_outcome and sync_received  # something was compared


async def test_connection_refused_agrees() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = OpenAICompatBackend(f"http://127.0.0.1:{port}", max_retries=1)
    sync_outcome = _outcome_sync(_generate(ASK)[0], backend)
    async_outcome = await _outcome_async(_generate(ASK)[1], backend)
    await backend.aclose()
    assert async_outcome == sync_outcome
    assert sync_outcome[0] == "APIConnectionError" and "is the server running" in sync_outcome[1]

"""TransformersBackend: sync and async paths give the same results, for every public method.

The tiny random-weight LLaVA decodes greedily, so each case (generate vs agenerate,
stream vs astream, and the errors) must give identical text, usage, finish reason and
chunks through both paths.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from llava_bridge import ImageInput, LlavaError, Message, VisionChunk, VisionRequest, VisionResult
from llava_bridge.backends.local.backend import TransformersBackend

from .conftest import colour_image


def _result(result: VisionResult) -> dict[str, Any]:
    """The result with its metrics' names only (their values are timings), and whether it
    has a request id (each call makes its own)."""
    dumped = result.model_dump()
    dumped["metrics"] = sorted(dumped["metrics"])
    dumped["request_id"] = bool(result.request_id)
    return dumped


def _chunks(chunks: list[VisionChunk]) -> list[Any]:
    last = chunks[-1].result
    return [c.delta for c in chunks] + ([_result(last)] if last is not None else [])


Sync = Callable[[TransformersBackend], Any]
Async = Callable[[TransformersBackend], Awaitable[Any]]


def _generate(request: VisionRequest) -> tuple[Sync, Async]:
    async def run(b: TransformersBackend) -> Any:
        return _result(await b.agenerate(request))

    return (lambda b: _result(b.generate(request))), run


def _stream(request: VisionRequest) -> tuple[Sync, Async]:
    async def run(b: TransformersBackend) -> Any:
        return _chunks([c async for c in b.astream(request)])

    return (lambda b: _chunks(list(b.stream(request)))), run


IMAGE = VisionRequest(prompt="w1 w2 w3", image=colour_image(0), max_new_tokens=12)
TEXT = VisionRequest(prompt="w4 w5", max_new_tokens=8)
CHAT = VisionRequest(
    messages=(
        Message(role="system", content="w6"),
        Message(role="user", content="w1 w2"),
        Message(role="assistant", content="w3"),
        Message(role="user", content="w4"),
    ),
    image=colour_image(5, size=(900, 700)),
    image_turn=1,
    max_new_tokens=10,
)
URL = VisionRequest(prompt="w1", image=ImageInput.from_url("https://example.com/cat.png"))

CASES: dict[str, tuple[Sync, Async]] = {
    "generate-image": _generate(IMAGE),
    "generate-text-only": _generate(TEXT),
    "generate-chat": _generate(CHAT),
    "stream-image": _stream(IMAGE),
    "stream-text-only": _stream(TEXT),
    "stream-chat": _stream(CHAT),
    "generate-url-image-refused": _generate(URL),
    "stream-url-image-refused": _stream(URL),
}


def _outcome_sync(fn: Sync, backend: TransformersBackend) -> Any:
    try:
        return fn(backend)
    except LlavaError as exc:
        return type(exc).__name__, str(exc)


async def _outcome_async(fn: Async, backend: TransformersBackend) -> Any:
    try:
        return await fn(backend)
    except LlavaError as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("name", list(CASES))
async def test_sync_and_async_agree(name: str, serial: TransformersBackend) -> None:
    sync_fn, async_fn = CASES[name]
    sync_outcome = _outcome_sync(sync_fn, serial)
    async_outcome = await _outcome_async(async_fn, serial)
    assert async_outcome == sync_outcome
    assert sync_outcome  # something was compared


async def test_stop_strings_agree(serial: TransformersBackend) -> None:
    """A stop string taken from the middle of the greedy answer cuts both paths at one place."""
    text = serial.generate(IMAGE).text
    assert len(text) > 4, "the tiny model answered too little to pick a stop string from"
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    request = IMAGE.model_copy(update={"stop": (stop,)})
    for sync_fn, async_fn in (_generate(request), _stream(request)):
        sync_outcome = sync_fn(serial)
        assert sync_outcome == await async_fn(serial)
    assert serial.generate(request).text == text[: text.index(stop)]


async def test_context_overflow_agrees(tiny_dir: Path) -> None:
    request = VisionRequest(prompt="w1 " * 200, image=colour_image(0), max_new_tokens=4)
    with TransformersBackend(str(tiny_dir), local_files_only=True, context_window=700) as backend:
        for sync_fn, async_fn in (_generate(request), _stream(request)):
            sync_outcome = _outcome_sync(sync_fn, backend)
            assert sync_outcome == await _outcome_async(async_fn, backend)
            assert sync_outcome[0] == "ContextOverflowError"

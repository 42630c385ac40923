"""FakeBackend: canned answers, history, limits, streaming, sync/async parity."""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from llava_bridge import Backend, ContextOverflowError, FakeBackend, ImageInput, VisionRequest

from .conftest import encode


def collect(backend: FakeBackend, request: VisionRequest) -> tuple[str, object]:
    deltas = list(backend.stream(request))
    assert deltas[-1].result is not None
    assert all(chunk.result is None for chunk in deltas[:-1])
    return "".join(chunk.delta for chunk in deltas), deltas[-1].result


async def acollect(backend: FakeBackend, request: VisionRequest) -> tuple[str, object]:
    deltas = [chunk async for chunk in backend.astream(request)]
    return "".join(chunk.delta for chunk in deltas), deltas[-1].result


def test_is_a_backend() -> None:
    assert isinstance(FakeBackend(), Backend)


def test_cycles_through_responses_and_records_history() -> None:
    backend = FakeBackend(["one", "two"])
    answers = [backend.generate(VisionRequest(prompt=f"q{i}")).text for i in range(3)]
    assert answers == ["one", "two", "one"]
    assert [r.prompt for r in backend.history] == ["q0", "q1", "q2"]


def test_function_responses_see_the_request() -> None:
    backend = FakeBackend(lambda request: request.prompt.upper())
    assert backend.generate(VisionRequest(prompt="shout")).text == "SHOUT"


def test_max_new_tokens_and_stop_apply() -> None:
    backend = FakeBackend("alpha beta gamma delta")
    result = backend.generate(VisionRequest(prompt="q", max_new_tokens=2))
    assert result.text == "alpha beta" and result.finish_reason == "length"
    result = backend.generate(VisionRequest(prompt="q", stop=[" gamma"]))
    assert result.text == "alpha beta" and result.finish_reason == "stop"
    assert result.usage.completion_tokens == 2 and result.usage.estimated


def test_stream_joins_to_generate() -> None:
    backend = FakeBackend("A cat  sits on\na mat. ")
    request = VisionRequest(prompt="q")
    text, result = collect(backend, request)
    assert text == backend.generate(request).text == "A cat  sits on\na mat. "
    assert result.text == text  # type: ignore[attr-defined]


def test_sync_and_async_agree() -> None:
    request = VisionRequest(prompt="q", max_new_tokens=3, stop=["zz"])
    sync, asynchronous = FakeBackend("w1 w2 w3 w4"), FakeBackend("w1 w2 w3 w4")
    a = sync.generate(request)
    b = asyncio.run(asynchronous.agenerate(request))
    assert a.model_dump(exclude={"request_id"}) == b.model_dump(exclude={"request_id"})
    assert collect(sync, request)[0] == asyncio.run(acollect(asynchronous, request))[0]


def test_errors_are_raised_and_still_recorded() -> None:
    backend = FakeBackend(error=RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        backend.generate(VisionRequest(prompt="q"))
    assert len(backend.history) == 1


def test_context_overflow_is_raised_before_answering() -> None:
    backend = FakeBackend(context_window=1000)
    with pytest.raises(ContextOverflowError):
        backend.generate(VisionRequest(prompt="x " * 2000, image="https://example.com/a.png"))
    assert backend.history == []


def test_image_facts_answers_from_the_image() -> None:
    backend = FakeBackend.image_facts()
    red = ImageInput.from_bytes(encode(Image.new("RGB", (30, 20), (230, 20, 20))))
    blue = ImageInput.from_bytes(encode(Image.new("RGB", (20, 30), (20, 40, 230))))
    assert backend.generate(VisionRequest(prompt="?", image=red)).text == "(fake) A 30x20 image, mostly red."
    assert "mostly blue" in backend.generate(VisionRequest(prompt="?", image=blue)).text
    assert "no image" in backend.generate(VisionRequest(prompt="hi")).text


def test_latency_is_honoured_without_blocking_the_loop() -> None:
    backend = FakeBackend(latency=0.5)

    async def main() -> int:
        results = await asyncio.gather(*(backend.agenerate(VisionRequest(prompt="q")) for _ in range(20)))
        return len(results)

    loop = asyncio.new_event_loop()
    try:
        start = loop.time()
        assert loop.run_until_complete(main()) == 20
        assert loop.time() - start < 5.0  # one after another would take 10 s
    finally:
        loop.close()

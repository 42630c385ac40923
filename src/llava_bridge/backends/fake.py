"""`FakeBackend`: canned answers and a request history, for testing your own code offline."""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from llava_bridge.images import ImageInput
from llava_bridge.prompts import CONTEXT_WINDOW, estimate_tokens, fit_to_context
from llava_bridge.stops import cut_at_stop
from llava_bridge.types import FinishReason, Usage, VisionChunk, VisionRequest, VisionResult

__all__ = ["CANNED_ANSWER", "FakeBackend", "Responder", "describe_image_facts"]

Responder = Callable[[VisionRequest], str]
CANNED_ANSWER = "This is a fake answer from FakeBackend."


class FakeBackend:
    """A backend that answers from a list of strings or a function, with no model.

    Answers cycle through `responses` (a string is a list of one), or come from
    `responses(request)` when it is callable. Every request is appended to
    `history`. `max_new_tokens` (counted in words) and `stop` apply as with a real
    model, and `stream` yields the answer word by word. `latency` makes each call
    take that many seconds; `error`, when set, is raised instead of answering.

    Args:
        responses: The answers, cycled through (a string is a list of one), or a function
            of the `VisionRequest` returning the answer.
        model_name: The name results carry as their model.
        context_window: The token budget conversations are fitted to.
        latency: Seconds each call takes before it answers.
        error: An exception raised by every call instead of answering.
    """

    exact_token_counts = False

    def __init__(
        self,
        responses: str | Sequence[str] | Responder = CANNED_ANSWER,
        *,
        model_name: str = "fake-llava",
        context_window: int = CONTEXT_WINDOW,
        latency: float = 0.0,
        error: Exception | None = None,
    ) -> None:
        if isinstance(responses, str):
            responses = [responses]
        if not callable(responses) and not responses:
            raise ValueError("FakeBackend needs at least one response.")
        self._responder: Responder | None = responses if callable(responses) else None
        self._cycle = None if callable(responses) else itertools.cycle(list(responses))
        self.model_name = model_name
        self.context_window = context_window
        self.latency = latency
        self.error = error
        self.history: list[VisionRequest] = []
        self._lock = threading.Lock()

    @classmethod
    def image_facts(cls, **kwargs: Any) -> FakeBackend:
        """A FakeBackend that answers from the image itself: its size and dominant colour.

        Different images get different answers, which makes retrieval and caching
        tests meaningful without a model.
        """
        return cls(describe_image_facts, **kwargs)

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    # -- the IO-free part, shared by all four methods ---------------------------------

    def _answer(self, request: VisionRequest) -> VisionResult:
        request, budget = fit_to_context(request, context_window=self.context_window)
        with self._lock:
            self.history.append(request)
            if self.error is not None:
                raise self.error
            text = self._responder(request) if self._responder else next(self._cycle)  # type: ignore[arg-type]
        text, _ = cut_at_stop(text, request.stop)
        words = _words(text)
        finish: FinishReason = "stop"
        if len(words) > request.max_new_tokens:
            text, finish = "".join(words[: request.max_new_tokens]), "length"
        usage = Usage(
            prompt_tokens=budget.prompt_tokens,
            completion_tokens=min(len(words), request.max_new_tokens),
            estimated=True,
            dropped_turns=budget.dropped_turns,
        )
        return VisionResult(
            text=text,
            usage=usage,
            finish_reason=finish,
            model=request.model or self.model_name,
            request_id=f"fake-{uuid.uuid4().hex[:12]}",
            metrics={"inference_time": self.latency},
        )

    # -- shells --------------------------------------------------------------------------

    def generate(self, request: VisionRequest) -> VisionResult:
        if self.latency:
            time.sleep(self.latency)
        return self._answer(request)

    async def agenerate(self, request: VisionRequest) -> VisionResult:
        if self.latency:
            await asyncio.sleep(self.latency)
        return self._answer(request)

    def stream(self, request: VisionRequest) -> Iterator[VisionChunk]:
        result = self.generate(request)
        yield from _chunks(result)

    async def astream(self, request: VisionRequest) -> AsyncIterator[VisionChunk]:
        result = await self.agenerate(request)
        for chunk in _chunks(result):
            yield chunk

    def __repr__(self) -> str:
        return f"FakeBackend(model_name={self.model_name!r}, calls={len(self.history)})"


_COLOURS = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
    "red": (220, 30, 30),
    "orange": (240, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 40),
    "blue": (30, 60, 220),
    "purple": (130, 40, 170),
    "pink": (240, 130, 180),
    "brown": (130, 80, 40),
}


def dominant_colour(image: ImageInput) -> str:
    """The basic colour name nearest to the image's mean colour."""
    pixel = image.to_pil().resize((1, 1), reducing_gap=None).getpixel((0, 0))
    assert isinstance(pixel, tuple)
    r, g, b = pixel[:3]
    return min(_COLOURS, key=lambda n: sum((x - y) ** 2 for x, y in zip(_COLOURS[n], (r, g, b), strict=True)))


def describe_image_facts(request: VisionRequest) -> str:
    """A fake answer built from the image's size and colour (not from a model)."""
    image = request.image
    if image is None:
        return f"(fake) There is no image. You said: {request.prompt}"
    if image.size is None:
        return f"(fake) An image at {image.url}; the fake backend does not fetch URLs."
    width, height = image.size
    return f"(fake) A {width}x{height} image, mostly {dominant_colour(image)}."


def _words(text: str) -> list[str]:
    """Split into words that keep their leading whitespace, so they join back exactly."""
    return re.findall(r"\s*\S+|\s+$", text)


def _chunks(result: VisionResult) -> Iterator[VisionChunk]:
    words = _words(result.text) or [""]
    for word in words[:-1]:
        yield VisionChunk(delta=word)
    yield VisionChunk(delta=words[-1], result=result)

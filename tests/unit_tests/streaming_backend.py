"""A backend that streams fixed deltas and applies no stop strings, to test ChatLlava's own stop logic."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence

from llava_bridge import Usage, VisionChunk, VisionRequest, VisionResult
from llava_bridge.prompts import CONTEXT_WINDOW, estimate_tokens


class DeltaBackend:
    """Streams `deltas` one by one; counts how many were pulled and whether the stream was closed."""

    model_name = "delta-llava"
    context_window = CONTEXT_WINDOW
    exact_token_counts = False

    def __init__(self, deltas: Sequence[str], *, usage: Usage | None = None) -> None:
        self.deltas = list(deltas)
        self.usage = usage or Usage()
        self.pulled = 0
        self.closed = False
        self.requests: list[VisionRequest] = []

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def _result(self) -> VisionResult:
        return VisionResult(
            text="".join(self.deltas), usage=self.usage, finish_reason="length", model="delta"
        )

    def generate(self, request: VisionRequest) -> VisionResult:
        self.requests.append(request)
        return self._result()

    async def agenerate(self, request: VisionRequest) -> VisionResult:
        return self.generate(request)

    def stream(self, request: VisionRequest) -> Iterator[VisionChunk]:
        self.requests.append(request)
        try:
            for index, delta in enumerate(self.deltas):
                self.pulled += 1
                last = index == len(self.deltas) - 1
                yield VisionChunk(delta=delta, result=self._result() if last else None)
        finally:
            self.closed = True

    async def astream(self, request: VisionRequest) -> AsyncIterator[VisionChunk]:
        for chunk in self.stream(request):
            yield chunk

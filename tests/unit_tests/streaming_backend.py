"""A backend that streams fixed deltas and cuts stops as every backend must, to test ChatLlava's streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence

from llava_bridge import Usage, VisionChunk, VisionRequest, VisionResult
from llava_bridge.prompts import CONTEXT_WINDOW, estimate_tokens
from llava_bridge.stops import StopScanner, cut_at_stop


class DeltaBackend:
    """Streams `deltas` one by one; counts how many were pulled and whether the stream was closed.

    Stops are cut here, by the backend (ChatLlava relies on it); `apply_stops=False`
    makes a backend that ignores them.
    """

    model_name = "delta-llava"
    context_window = CONTEXT_WINDOW
    exact_token_counts = False

    def __init__(
        self, deltas: Sequence[str], *, usage: Usage | None = None, apply_stops: bool = True
    ) -> None:
        self.deltas = list(deltas)
        self.usage = usage or Usage()
        self.apply_stops = apply_stops
        self.pulled = 0
        self.closed = False
        self.requests: list[VisionRequest] = []

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def _stops(self, request: VisionRequest) -> tuple[str, ...]:
        return request.stop if self.apply_stops else ()

    def _result(self, text: str, stopped: bool) -> VisionResult:
        return VisionResult(
            text=text, usage=self.usage, finish_reason="stop" if stopped else "length", model="delta"
        )

    def generate(self, request: VisionRequest) -> VisionResult:
        self.requests.append(request)
        return self._result(*cut_at_stop("".join(self.deltas), self._stops(request)))

    async def agenerate(self, request: VisionRequest) -> VisionResult:
        return self.generate(request)

    def stream(self, request: VisionRequest) -> Iterator[VisionChunk]:
        self.requests.append(request)
        scanner = StopScanner(self._stops(request))
        text = ""
        try:
            for index, delta in enumerate(self.deltas):
                self.pulled += 1
                emitted = scanner.feed(delta)
                if scanner.stopped or index == len(self.deltas) - 1:
                    emitted += scanner.flush()
                    text += emitted
                    yield VisionChunk(delta=emitted, result=self._result(text, scanner.stopped))
                    return
                text += emitted
                yield VisionChunk(delta=emitted)
        finally:
            self.closed = True

    async def astream(self, request: VisionRequest) -> AsyncIterator[VisionChunk]:
        for chunk in self.stream(request):
            yield chunk

"""OpenAI's routes share the queue workers' slots: the backend never sees more than `concurrency`.

The server runs in this process (uvicorn on an ephemeral port) so that a counting
backend can report how many requests reached it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import openai

from llava_bridge import Usage, VisionChunk, VisionRequest, VisionResult
from llava_bridge.server import ServerSettings, create_app
from tests.server.conftest import APP, serve_in_thread

DEADLINE_S = 20.0
THIRD_WAIT_S = 1.5
"""How long each pair waits for a third request (which arrives only if the slots are not shared)."""


class PairingBackend:
    """Counts requests in flight; each waits until another one is in flight too (or a deadline),
    then a while longer for a third one, which shared slots never let in."""

    model_name = "pairing"
    context_window = 4096
    exact_token_counts = False

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.changed: asyncio.Condition | None = None

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def agenerate(self, request: VisionRequest) -> VisionResult:
        self.changed = self.changed or asyncio.Condition()
        async with self.changed:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.changed.notify_all()
            await asyncio.wait_for(self.changed.wait_for(lambda: self.active >= 2), DEADLINE_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(lambda: self.peak > 2), THIRD_WAIT_S)
        async with self.changed:
            self.active -= 1
        return VisionResult(text="paired", usage=Usage(completion_tokens=1), finish_reason="stop")

    def generate(self, request: VisionRequest) -> VisionResult:
        raise NotImplementedError

    def stream(self, request: VisionRequest) -> Iterator[VisionChunk]:
        raise NotImplementedError

    async def astream(self, request: VisionRequest) -> AsyncIterator[VisionChunk]:
        yield VisionChunk(delta="", result=await self.agenerate(request))


def test_completions_and_fal_runs_share_the_worker_slots(data_uri: str) -> None:
    backend = PairingBackend()
    app = create_app(backend, ServerSettings(db_path=":memory:", concurrency=2))
    with serve_in_thread(app) as url:
        statuses: list[int] = []
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)
        fal = httpx.Client(timeout=60)
        start = threading.Barrier(4)

        def chat() -> None:
            start.wait()
            completion = sdk.chat.completions.create(model=APP, messages=[{"role": "user", "content": "hi"}])
            statuses.append(200 if completion.choices[0].message.content == "paired" else 0)

        def run() -> None:
            start.wait()
            body = {"image_url": data_uri, "prompt": "hi"}
            statuses.append(fal.post(f"{url}/run/{APP}", json=body).status_code)

        threads = [threading.Thread(target=target) for target in (chat, run, chat, run)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        sdk.close()
        fal.close()
    assert backend.peak == 2
    assert statuses == [200] * 4


class EndlessBackend(PairingBackend):
    """Streams words until the stream is closed; records closes."""

    model_name = "endless"

    def __init__(self) -> None:
        super().__init__()
        self.closed = 0

    async def agenerate(self, request: VisionRequest) -> VisionResult:
        return VisionResult(text="done", usage=Usage(completion_tokens=1), finish_reason="stop")

    async def astream(self, request: VisionRequest) -> AsyncIterator[VisionChunk]:
        try:
            while True:
                yield VisionChunk(delta=" word")
                await asyncio.sleep(0.01)
        finally:
            self.closed += 1


def test_a_stream_the_client_abandons_frees_its_slot() -> None:
    backend = EndlessBackend()
    app = create_app(backend, ServerSettings(db_path=":memory:", concurrency=1))
    with serve_in_thread(app) as url:
        with openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=DEADLINE_S) as sdk:
            stream = sdk.chat.completions.create(
                model=APP, messages=[{"role": "user", "content": "go on"}], stream=True
            )
            for index, _ in enumerate(stream):
                if index == 3:
                    break
            stream.close()
            # with one slot, this completes only once the abandoned stream let go of it
            completion = sdk.chat.completions.create(model=APP, messages=[{"role": "user", "content": "hi"}])
        assert completion.choices[0].message.content == "done"
        assert backend.closed == 1

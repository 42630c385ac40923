"""The micro-batcher on its own: threads and asyncio callers, keys, limits, errors, closing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from llava_bridge.backends.local.batcher import BatcherClosedError, MicroBatcher


class Recorder:
    """A run_batch that doubles numbers, remembers each batch and can be made slow or held.

    `busy` is set when a batch starts; with `hold`, each batch waits until it is set.
    """

    def __init__(self, delay: float = 0.0, hold: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay = delay
        self.busy = threading.Event()
        self.hold = hold

    def __call__(self, jobs: Sequence[int]) -> list[int]:
        self.batches.append(list(jobs))
        self.threads.add(threading.current_thread().name)
        self.busy.set()
        if self.hold is not None:
            assert self.hold.wait(10), "the test never released the batch"
        time.sleep(self.delay)
        return [job * 2 for job in jobs]


def make(recorder: Recorder, **options: object) -> MicroBatcher[int, int]:
    settings: dict[str, object] = {"batch_key": lambda job: job % 2, "max_batch_size": 4, "wait_s": 0.05}
    settings.update(options)
    return MicroBatcher(recorder, **settings)  # type: ignore[arg-type]


def test_threads_are_batched_by_key_and_size_on_one_worker() -> None:
    recorder = Recorder()
    batcher = make(recorder, wait_s=0.5)  # a busy machine may wake the ten threads some ms apart
    results: dict[int, int] = {}
    barrier = threading.Barrier(10)

    def call(job: int) -> None:
        barrier.wait(timeout=5)
        results[job] = batcher.submit(job).result(timeout=5)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    batcher.close()
    assert results == {i: i * 2 for i in range(10)}
    assert all(len(batch) <= 4 and len({job % 2 for job in batch}) == 1 for batch in recorder.batches)
    assert len(recorder.batches) < 10
    assert len(recorder.threads) == 1


async def test_asyncio_callers_do_not_block_the_loop() -> None:
    recorder = Recorder(delay=1.0)  # the batch runs 1 s: a loop blocked by it would not tick
    batcher = make(recorder, batch_key=lambda job: 0, max_batch_size=8)
    started = time.monotonic()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while time.monotonic() - started < 0.8:
            ticks += 1
            await asyncio.sleep(0.005)

    results, _ = await asyncio.gather(
        asyncio.gather(*(asyncio.wrap_future(batcher.submit(i)) for i in range(8))), ticker()
    )
    batcher.close()
    assert list(results) == [i * 2 for i in range(8)]
    assert recorder.batches == [list(range(8))]
    assert ticks >= 5


def test_busy_worker_takes_everything_queued_without_waiting() -> None:
    recorder = Recorder(hold=threading.Event())
    batcher = make(recorder, batch_key=lambda job: 0, max_batch_size=16, wait_s=0.0)
    first = batcher.submit(0)
    assert recorder.busy.wait(5)  # the worker is now busy with [0]
    rest = [batcher.submit(i) for i in range(1, 6)]
    assert recorder.hold is not None
    recorder.hold.set()
    assert [f.result(timeout=5) for f in [first, *rest]] == [0, 2, 4, 6, 8, 10]
    batcher.close()
    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]


def test_an_error_reaches_every_caller_of_the_batch() -> None:
    def explode(jobs: Sequence[int]) -> list[int]:
        raise ValueError(f"bad batch {list(jobs)}")

    batcher: MicroBatcher[int, int] = MicroBatcher(explode, batch_key=lambda job: 0, wait_s=0.05)
    futures = [batcher.submit(i) for i in range(3)]
    for future in futures:
        with pytest.raises(ValueError, match="bad batch"):
            future.result(timeout=5)
    assert batcher.submit_alone(lambda: 7).result(timeout=5) == 7  # the worker survived
    batcher.close()


def test_alone_jobs_run_by_themselves_in_order() -> None:
    recorder = Recorder()
    batcher = make(recorder, batch_key=lambda job: 0, wait_s=0.05)
    order: list[str] = []
    a = batcher.submit(1)
    alone = batcher.submit_alone(lambda: order.append("alone") or 99)
    b = batcher.submit(2)
    assert (a.result(timeout=5), alone.result(timeout=5), b.result(timeout=5)) == (2, 99, 4)
    batcher.close()
    assert order == ["alone"]
    assert recorder.batches == [[1, 2]]


def test_cancelled_jobs_are_skipped_and_close_fails_the_rest() -> None:
    release = threading.Event()
    recorder = Recorder(hold=release)
    batcher = make(recorder, batch_key=lambda job: 0, max_batch_size=1, wait_s=0.0)
    running = batcher.submit(1)
    assert recorder.busy.wait(5)  # the worker runs [1] until released
    cancelled = batcher.submit(2)
    waiting = batcher.submit(3)
    assert cancelled.cancel()
    batcher.close(timeout=0)  # closed while [1] still runs
    release.set()
    assert running.result(timeout=5) == 2
    with pytest.raises(BatcherClosedError):
        waiting.result(timeout=5)
    assert [2] not in recorder.batches
    with pytest.raises(BatcherClosedError, match="closed"):
        batcher.submit(4)


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), batch_key=lambda job: 0, max_batch_size=0)

"""Event-loop stall checks: a 12 MP test photo and a 5 ms ticker beside an awaited call."""

from __future__ import annotations

import asyncio
import functools
import io
import time
from collections.abc import Awaitable
from typing import TypeVar

from PIL import Image

__all__ = ["ticker_gap", "twelve_megapixel_jpeg"]

T = TypeVar("T")


@functools.cache
def twelve_megapixel_jpeg() -> bytes:
    """A 4000x3000 JPEG (quality 90) of noise over gradients, so decoding costs what a photo's does."""
    size = (4000, 3000)
    noise = Image.effect_noise(size, 48)
    gradient = Image.linear_gradient("L").resize(size)
    image = Image.merge("RGB", (noise, gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


async def ticker_gap(call: Awaitable[T]) -> tuple[float, T]:
    """The longest time the loop took to come back to a 5 ms ticker while `call` ran, and its result."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    try:
        result = await call
    finally:
        done.set()
        await task
    return max(gaps), result

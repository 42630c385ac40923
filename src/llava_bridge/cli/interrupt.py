"""Run a coroutine so that a first Ctrl-C cancels it (and so its jobs) and a second exits at once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from types import FrameType
from typing import Any, TypeVar

__all__ = ["run_cancellable"]

T = TypeVar("T")

SECOND_CTRL_C = "llava-bridge: interrupted again; exiting now (jobs still being cancelled may keep running)."


def run_cancellable(coroutine: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coroutine)`, where Ctrl-C cancels the coroutine's task and waits for it
    (it may return normally after cleaning up), and a second Ctrl-C exits with code 130."""
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(coroutine)
    task: asyncio.Task[T] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    presses = 0

    def on_ctrl_c(signum: int, frame: FrameType | None) -> None:
        nonlocal presses
        if task is None or loop is None:
            raise KeyboardInterrupt  # nothing started yet: stop as usual
        presses += 1
        if presses == 1:
            loop.call_soon_threadsafe(task.cancel)
            return
        print(SECOND_CTRL_C, file=sys.stderr, flush=True)
        os._exit(130)  # do not wait for the clean-up the first Ctrl-C started

    async def main() -> T:
        nonlocal task, loop
        task, loop = asyncio.current_task(), asyncio.get_running_loop()
        return await coroutine

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        return asyncio.run(main())
    finally:
        signal.signal(signal.SIGINT, previous)

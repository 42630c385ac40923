"""`CancelSignal`: how a driver stops every `LlavaDescriber` of a run, and waits for their cancels.

Ray Data cannot interrupt a batch an actor is working on, and killing the actor would
leave its jobs running on the server (and billed). Instead the driver calls `cancel()`:
each describer cancels the requests it has in flight (the backend cancels their jobs),
returns their rows marked `CANCELLED` (or `NOT_STARTED` for rows still waiting), and does no
work on later batches. `wait_idle()`
returns once no describer is inside a batch any more.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray

__all__ = ["CANCELLED", "NOT_STARTED", "CancelSignal"]

CANCELLED = "Cancelled: the run was interrupted while this image was being described."
"""The `error` of a row whose request was in flight at `CancelSignal.cancel` (its job was cancelled)."""
NOT_STARTED = "Not started: the run was interrupted before this image was sent."
"""The `error` of a row no request was made for because the run was cancelled first."""


class _SignalActor:
    """Holds the cancel flag and how many batches are being worked on."""

    def __init__(self) -> None:
        self._cancelled = asyncio.Event()
        self._busy = 0

    async def enter(self) -> bool:
        """A describer starts a batch; True means the run is cancelled (do no work)."""
        if not self._cancelled.is_set():
            self._busy += 1
        return self._cancelled.is_set()

    async def leave(self) -> None:
        self._busy = max(self._busy - 1, 0)

    async def cancel(self) -> None:
        self._cancelled.set()

    async def wait_cancelled(self) -> None:
        await self._cancelled.wait()

    async def busy(self) -> int:
        return self._busy


_REMOTE_SIGNAL: Any = ray.remote(num_cpus=0)(_SignalActor)


class CancelSignal:
    """A cancel flag shared by the driver and every describer of one run (a tiny Ray actor)."""

    def __init__(self) -> None:
        self.actor: Any = _REMOTE_SIGNAL.remote()

    def cancel(self) -> None:
        """Tell every describer to cancel its requests; returns at once."""
        self.actor.cancel.remote()

    def busy(self) -> int:
        """How many batches describers are still working on."""
        count: int = ray.get(self.actor.busy.remote())
        return count

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no describer is inside a batch; False if `timeout` seconds ran out first."""
        deadline = time.monotonic() + timeout
        while self.busy():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def close(self) -> None:
        """Stop the signal's actor."""
        ray.kill(self.actor)

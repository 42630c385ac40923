"""Thin sync and async shells that perform a flow's effects.

`run_sync`/`run_async` drive a flow to its return value, handing emitted values
to a callback; `iterate_sync`/`iterate_async` yield the emitted values instead.
Neither ever starts an event loop of its own.

HTTP goes through a *transport*: our own HTTP/1.1 pools (`_h1_sync`, `_h1_async`),
or httpx (`_httpx_transport`) for an injected client or behind a proxy. Both answer
`send(request)` with a whole response and `open(request)` with a head and a body
to read piece by piece, and both classify failures the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol, TypeVar

from ..errors import ConfigurationError
from ._fal_http import Abandoned
from ._fal_wire import (
    CloseStream,
    Compute,
    Effect,
    Emit,
    Flow,
    HttpRequest,
    HttpResponse,
    NextEvent,
    OpenStream,
    Sleep,
    StreamEnd,
    TransportFailure,
)
from ._h1_io import Broken
from ._sse import SseEvent, SseParser

__all__ = ["AsyncTransport", "SyncTransport", "iterate_async", "iterate_sync", "run_async", "run_sync"]

logger = logging.getLogger("llava_bridge.fal")

T = TypeVar("T")
EmitHandler = Callable[[Any], Any]
"""A plain function, or (for the async drivers) an async one."""

DRAIN_SECONDS = 0.05
"""How long a stream that should be ending (after COMPLETED) is read before it is cut."""


class SyncBody(Protocol):
    def read(self, timeout: float | None = None) -> bytes:
        """The next piece; ``b""`` at the end. `timeout` shortens the read timeout. Raises `Broken`."""
        ...

    def close(self, drain: float = 0.0) -> None: ...


class SyncTransport(Protocol):
    def send(self, request: HttpRequest) -> HttpResponse | TransportFailure: ...

    def open(self, request: HttpRequest) -> tuple[HttpResponse, SyncBody | None] | TransportFailure: ...


class AsyncBody(Protocol):
    async def read(self, timeout: float | None = None) -> bytes: ...

    async def close(self, drain: float = 0.0) -> None: ...


class AsyncTransport(Protocol):
    async def send(self, request: HttpRequest) -> HttpResponse | TransportFailure: ...

    async def open(
        self, request: HttpRequest
    ) -> tuple[HttpResponse, AsyncBody | None] | TransportFailure: ...


def _call_back(handler: EmitHandler | None, value: Any) -> None:
    if handler is None:
        return
    outcome = handler(value)
    if inspect.isawaitable(outcome):
        if inspect.iscoroutine(outcome):
            outcome.close()
        raise ConfigurationError(
            "on_queue_update is an async function; use agenerate()/asubmit(), or pass a plain function."
        )


class _SyncPerformer:
    """Performs effects through a sync transport; owns at most one open stream."""

    def __init__(self, transport: SyncTransport) -> None:
        self._transport = transport
        self._body: SyncBody | None = None
        self._events = SseParser()

    def perform(self, effect: Effect) -> Any:
        if isinstance(effect, HttpRequest):
            return self._transport.send(effect)
        if isinstance(effect, OpenStream):
            self.close()
            opened = self._transport.open(effect.request)
            if isinstance(opened, TransportFailure):
                return opened
            response, self._body = opened
            self._events = SseParser()
            return response
        if isinstance(effect, NextEvent):
            return self._next_event(effect.timeout)
        if isinstance(effect, CloseStream):
            self.close(DRAIN_SECONDS if effect.drain else 0.0)
            return None
        if isinstance(effect, Sleep):
            if effect.seconds > 0:
                time.sleep(effect.seconds)
            return None
        if isinstance(effect, Compute):
            return effect.function()
        raise TypeError(f"unknown effect {effect!r}")  # pragma: no cover - a bug in a flow

    def _next_event(self, timeout: float | None) -> SseEvent | StreamEnd | TransportFailure:
        while (event := self._events.next_event()) is None:
            if self._body is None or self._events.done:
                self.close()
                return StreamEnd()
            try:
                self._events.feed(self._body.read(timeout))
            except Broken as exc:
                self.close()
                return exc.failure
        return event

    def close(self, drain: float = 0.0) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close(drain)


class _AsyncPerformer:
    """Performs effects through an async transport; owns at most one open stream."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport
        self._body: AsyncBody | None = None
        self._events = SseParser()

    async def perform(self, effect: Effect) -> Any:
        if isinstance(effect, HttpRequest):
            return await self._transport.send(effect)
        if isinstance(effect, OpenStream):
            await self.close()
            opened = await self._transport.open(effect.request)
            if isinstance(opened, TransportFailure):
                return opened
            response, self._body = opened
            self._events = SseParser()
            return response
        if isinstance(effect, NextEvent):
            return await self._next_event(effect.timeout)
        if isinstance(effect, CloseStream):
            await self.close(DRAIN_SECONDS if effect.drain else 0.0)
            return None
        if isinstance(effect, Sleep):
            if effect.seconds > 0:
                await asyncio.sleep(effect.seconds)
            return None
        if isinstance(effect, Compute):
            return await asyncio.to_thread(effect.function)
        raise TypeError(f"unknown effect {effect!r}")  # pragma: no cover - a bug in a flow

    async def _next_event(self, timeout: float | None) -> SseEvent | StreamEnd | TransportFailure:
        while (event := self._events.next_event()) is None:
            if self._body is None or self._events.done:
                await self.close()
                return StreamEnd()
            try:
                self._events.feed(await self._body.read(timeout))
            except Broken as exc:
                await self.close()
                return exc.failure
        return event

    async def close(self, drain: float = 0.0) -> None:
        body, self._body = self._body, None
        if body is not None:
            await body.close(drain)


def _abandon_sync(flow: Flow[Any], performer: _SyncPerformer) -> None:
    """Let the flow clean up after its caller gave up (it cancels a queued job)."""
    try:
        effect = flow.throw(Abandoned())
        while True:
            reply = None if isinstance(effect, Emit) else performer.perform(effect)
            effect = flow.send(reply)
    except (StopIteration, Abandoned):
        pass
    except Exception as exc:  # the interruption matters more than a failed clean-up
        logger.warning("Clean-up after an interrupted fal call failed: %s", exc)


async def _abandon_async(flow: Flow[Any], performer: _AsyncPerformer) -> None:
    """Async `_abandon_sync`: runs once the task was cancelled (a second cancel stops it)."""
    try:
        effect = flow.throw(Abandoned())
        while True:
            reply = None if isinstance(effect, Emit) else await performer.perform(effect)
            effect = flow.send(reply)
    except (StopIteration, Abandoned):
        pass
    except asyncio.CancelledError:
        logger.warning("Clean-up after a cancelled fal call was itself cancelled; the job may still run.")
    except Exception as exc:
        logger.warning("Clean-up after a cancelled fal call failed: %s", exc)


def run_sync(flow: Flow[T], transport: SyncTransport, on_emit: EmitHandler | None = None) -> T:
    """Drive `flow` to its result; emitted values go to `on_emit`."""
    performer = _SyncPerformer(transport)
    try:
        reply: Any = None
        while True:
            try:
                effect = flow.send(reply)
            except StopIteration as stop:
                result: T = stop.value
                return result
            try:
                if isinstance(effect, Emit):
                    _call_back(on_emit, effect.value)
                    reply = None
                else:
                    reply = performer.perform(effect)
            except KeyboardInterrupt:
                _abandon_sync(flow, performer)
                raise
    finally:
        flow.close()
        performer.close()


def iterate_sync(flow: Flow[Any], transport: SyncTransport) -> Iterator[Any]:
    """Drive `flow`, yielding each emitted value."""
    performer = _SyncPerformer(transport)
    try:
        reply: Any = None
        while True:
            try:
                effect = flow.send(reply)
            except StopIteration:
                return
            if isinstance(effect, Emit):
                yield effect.value
                reply = None
            else:
                reply = performer.perform(effect)
    finally:
        flow.close()
        performer.close()


async def run_async(flow: Flow[T], transport: AsyncTransport, on_emit: EmitHandler | None = None) -> T:
    """Drive `flow` to its result; emitted values go to `on_emit` (awaited when async)."""
    performer = _AsyncPerformer(transport)
    try:
        reply: Any = None
        while True:
            try:
                effect = flow.send(reply)
            except StopIteration as stop:
                result: T = stop.value
                return result
            try:
                if isinstance(effect, Emit):
                    if on_emit is not None:
                        outcome = on_emit(effect.value)
                        if inspect.isawaitable(outcome):
                            await outcome
                    reply = None
                else:
                    reply = await performer.perform(effect)
            except asyncio.CancelledError:
                await _abandon_async(flow, performer)
                raise
    finally:
        flow.close()
        await performer.close()


async def iterate_async(flow: Flow[Any], transport: AsyncTransport) -> AsyncIterator[Any]:
    """Drive `flow`, yielding each emitted value."""
    performer = _AsyncPerformer(transport)
    try:
        reply: Any = None
        while True:
            try:
                effect = flow.send(reply)
            except StopIteration:
                return
            if isinstance(effect, Emit):
                yield effect.value
                reply = None
            else:
                reply = await performer.perform(effect)
    finally:
        flow.close()
        await performer.close()

"""Thin sync and async shells that perform a flow's effects.

`run_sync`/`run_async` drive a flow to its return value, handing emitted values
to a callback; `iterate_sync`/`iterate_async` yield the emitted values instead.
Neither ever starts an event loop of its own.

HTTP goes through a *transport*: our own HTTP/1.1 pools (`sync_pool`, `async_pool`),
or httpx (`httpx_adapter`) for an injected client or behind a proxy. Both answer
`send(request)` with a whole response and `open(request)` with a head and a body
to read piece by piece, and both classify failures the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from llava_bridge.backends._transport.bodies import ResponseLimitExceeded
from llava_bridge.backends._transport.effects import (
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
from llava_bridge.backends._transport.failures import to_failure
from llava_bridge.backends._transport.flows import Abandoned
from llava_bridge.backends._transport.pool_base import Broken
from llava_bridge.backends._transport.sse import SseEvent, SseParser
from llava_bridge.errors import ConfigurationError

__all__ = ["AsyncTransport", "SyncTransport", "iterate_async", "iterate_sync", "run_async", "run_sync"]

logger = logging.getLogger("llava_bridge.fal")
http_logger = logging.getLogger("llava_bridge.http")

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


def _log_http(request: HttpRequest, outcome: Any, started: float) -> None:
    """One DEBUG line per request: method, URL without query or userinfo, status, milliseconds."""
    if not http_logger.isEnabledFor(logging.DEBUG):
        return
    parts = urllib.parse.urlsplit(request.url)
    url = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    if isinstance(outcome, tuple):
        outcome = outcome[0]
    status = outcome.status_code if isinstance(outcome, HttpResponse) else f"failed ({outcome.message})"
    elapsed_ms = (time.monotonic() - started) * 1000
    http_logger.debug("%s %s -> %s (%.0f ms)", request.method, url, status, elapsed_ms)


def _event_ends(timeout: float | None, idle: float | None) -> float | None:
    """When the wait for the next event must be over: keep-alive comments do not extend it."""
    limit = idle if timeout is None else timeout if idle is None else min(timeout, idle)
    return None if limit is None else time.monotonic() + limit


def _time_left(ends: float | None) -> float | None:
    """Seconds left before `ends`; raises TimeoutError once it has passed."""
    if ends is None:
        return None
    left = ends - time.monotonic()
    if left <= 0:
        raise TimeoutError("no event came in time (the stream sent only keep-alives)")
    return left


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
        self._idle: float | None = None
        """The open stream's read timeout: the longest wait for its next event."""

    def perform(self, effect: Effect) -> Any:
        if isinstance(effect, HttpRequest):
            started = time.monotonic()
            response = self._transport.send(effect)
            _log_http(effect, response, started)
            return response
        if isinstance(effect, OpenStream):
            self.close()
            started = time.monotonic()
            opened = self._transport.open(effect.request)
            _log_http(effect.request, opened, started)
            if isinstance(opened, TransportFailure):
                return opened
            response, self._body = opened
            self._events = SseParser()
            self._idle = effect.request.read_timeout
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
        ends = _event_ends(timeout, self._idle)
        while (event := self._events.next_event()) is None:
            if self._body is None or self._events.done:
                self.close()
                return StreamEnd()
            try:
                self._events.feed(self._body.read(_time_left(ends)))
            except Broken as exc:
                self.close()
                return exc.failure
            except (ResponseLimitExceeded, TimeoutError) as exc:
                self.close()
                return to_failure(exc)
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
        self._idle: float | None = None
        """The open stream's read timeout: the longest wait for its next event."""

    async def perform(self, effect: Effect) -> Any:
        if isinstance(effect, HttpRequest):
            started = time.monotonic()
            response = await self._transport.send(effect)
            _log_http(effect, response, started)
            return response
        if isinstance(effect, OpenStream):
            await self.close()
            started = time.monotonic()
            opened = await self._transport.open(effect.request)
            _log_http(effect.request, opened, started)
            if isinstance(opened, TransportFailure):
                return opened
            response, self._body = opened
            self._events = SseParser()
            self._idle = effect.request.read_timeout
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
        ends = _event_ends(timeout, self._idle)
        while (event := self._events.next_event()) is None:
            if self._body is None or self._events.done:
                await self.close()
                return StreamEnd()
            try:
                self._events.feed(await self._body.read(_time_left(ends)))
            except Broken as exc:
                await self.close()
                return exc.failure
            except (ResponseLimitExceeded, TimeoutError) as exc:
                await self.close()
                return to_failure(exc)
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
        logger.warning("Clean-up after an interrupted call failed: %s", exc)


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
        logger.warning("Clean-up after a cancelled call was itself cancelled; the job may still run.")
    except Exception as exc:
        logger.warning("Clean-up after a cancelled call failed: %s", exc)


@dataclass(frozen=True)
class _Finished:
    """The last thing `_drive_async` yields: the flow's return value."""

    value: Any


def _drive_sync(flow: Flow[T], performer: _SyncPerformer, *, abandon: bool) -> Generator[Any, None, T]:
    """Perform `flow`'s effects, yielding what it emits; returns its result. With `abandon`,
    Ctrl-C (while an effect runs, or thrown in at a yield) lets the flow clean up first."""
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
                    yield effect.value
                    reply = None
                else:
                    reply = performer.perform(effect)
            except KeyboardInterrupt:
                if abandon:
                    _abandon_sync(flow, performer)
                raise
    finally:
        flow.close()
        performer.close()


async def _drive_async(
    flow: Flow[Any], performer: _AsyncPerformer, *, abandon: bool
) -> AsyncGenerator[Any, None]:
    """Async `_drive_sync`: yields what the flow emits, then `_Finished(result)`. With
    `abandon`, a cancellation (while an effect runs, or thrown in at a yield) lets the flow
    clean up first."""
    try:
        reply: Any = None
        while True:
            try:
                effect = flow.send(reply)
            except StopIteration as stop:
                yield _Finished(stop.value)
                return
            try:
                if isinstance(effect, Emit):
                    yield effect.value
                    reply = None
                else:
                    reply = await performer.perform(effect)
            except asyncio.CancelledError:
                if abandon:
                    await _abandon_async(flow, performer)
                raise
    finally:
        flow.close()
        await performer.close()


def run_sync(flow: Flow[T], transport: SyncTransport, on_emit: EmitHandler | None = None) -> T:
    """Drive `flow` to its result; emitted values go to `on_emit`. Ctrl-C cancels its job."""
    steps = _drive_sync(flow, _SyncPerformer(transport), abandon=True)
    try:
        value = next(steps)
        while True:
            try:
                _call_back(on_emit, value)
            except KeyboardInterrupt as exc:
                steps.throw(exc)
            value = next(steps)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        steps.close()


def iterate_sync(flow: Flow[Any], transport: SyncTransport) -> Iterator[Any]:
    """Drive `flow`, yielding each emitted value."""
    return _drive_sync(flow, _SyncPerformer(transport), abandon=False)


async def run_async(flow: Flow[T], transport: AsyncTransport, on_emit: EmitHandler | None = None) -> T:
    """Drive `flow` to its result; emitted values go to `on_emit` (awaited when async).
    Cancelling the task cancels its job."""
    steps = _drive_async(flow, _AsyncPerformer(transport), abandon=True)
    try:
        async for value in steps:
            if isinstance(value, _Finished):
                result: T = value.value
                return result
            if on_emit is None:
                continue
            try:
                outcome = on_emit(value)
                if inspect.isawaitable(outcome):
                    await outcome
            except asyncio.CancelledError as exc:
                await steps.athrow(exc)
        raise RuntimeError(
            "the flow ended without a result"
        )  # pragma: no cover - _drive_async always finishes
    finally:
        await steps.aclose()


async def iterate_async(flow: Flow[Any], transport: AsyncTransport) -> AsyncIterator[Any]:
    """Drive `flow`, yielding each emitted value."""
    steps = _drive_async(flow, _AsyncPerformer(transport), abandon=False)
    try:
        async for value in steps:
            if not isinstance(value, _Finished):
                yield value
    finally:
        await steps.aclose()

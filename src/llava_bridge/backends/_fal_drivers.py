"""Thin sync and async shells that perform a flow's effects with httpx.

`run_sync`/`run_async` drive a flow to its return value, handing emitted values
to a callback; `iterate_sync`/`iterate_async` yield the emitted values instead.
Neither ever starts an event loop of its own.

Server-sent-event streams may go through a second client (`streams=`): a stream
closed early (after COMPLETED) takes its connection down with it, so keeping
streams in their own pool leaves the warm connection of the submit free for the
result fetch that follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import httpx

from ..errors import ConfigurationError
from ..retry import Failure
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
from ._sse import SseDecoder

__all__ = ["iterate_async", "iterate_sync", "run_async", "run_sync"]

logger = logging.getLogger("llava_bridge.fal")

T = TypeVar("T")
EmitHandler = Callable[[Any], Any]

_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,  # the body did not get out whole: the server cannot act on it
    httpx.WriteTimeout,
    httpx.ProxyError,
)
DRAIN_SECONDS = 0.05
"""How long a stream that should be ending (after COMPLETED) is read before it is cut."""
_FATAL = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL)


def _failure(exc: Exception) -> TransportFailure:
    """Classify an httpx exception: could the server have received the request?"""
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, _FATAL):
        return TransportFailure(Failure.NOT_SENT, message, fatal=True)
    failure = Failure.NOT_SENT if isinstance(exc, _NOT_SENT) else Failure.AFTER_SEND
    return TransportFailure(failure, message, timed_out=isinstance(exc, httpx.TimeoutException))


def _timeout(request: HttpRequest) -> httpx.Timeout:
    return httpx.Timeout(
        connect=request.connect_timeout,
        read=request.read_timeout,
        write=request.read_timeout,
        pool=request.connect_timeout,
    )


def _build(client: httpx.Client | httpx.AsyncClient, request: HttpRequest) -> httpx.Request:
    headers = dict(request.headers)
    content = request.content
    if request.json_body is not None:
        content = json.dumps(request.json_body, separators=(",", ":"), ensure_ascii=False).encode()
        headers.setdefault("Content-Type", "application/json")
    return client.build_request(
        request.method,
        request.url,
        headers=headers,
        params=dict(request.params) or None,
        content=content,
        timeout=_timeout(request),
    )


def _response(response: httpx.Response, body: bytes = b"") -> HttpResponse:
    headers = {key.lower(): value for key, value in response.headers.items()}
    return HttpResponse(response.status_code, headers, body)


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
    """Performs effects with an httpx.Client; owns at most one open stream."""

    def __init__(self, client: httpx.Client, streams: httpx.Client | None = None) -> None:
        self._client = client
        self._streams = streams or client
        self._stream: httpx.Response | None = None
        self._lines: Iterator[str] | None = None
        self._decoder = SseDecoder()

    def perform(self, effect: Effect) -> Any:
        if isinstance(effect, HttpRequest):
            try:
                response = self._client.send(_build(self._client, effect))
            except httpx.RequestError as exc:
                return _failure(exc)
            return _response(response, response.content)
        if isinstance(effect, OpenStream):
            return self._open(effect.request)
        if isinstance(effect, NextEvent):
            return self._next_event()
        if isinstance(effect, CloseStream):
            self.close()
            return None
        if isinstance(effect, Sleep):
            if effect.seconds > 0:
                time.sleep(effect.seconds)
            return None
        if isinstance(effect, Compute):
            return effect.function()
        raise TypeError(f"unknown effect {effect!r}")  # pragma: no cover - a bug in a flow

    def _open(self, request: HttpRequest) -> HttpResponse | TransportFailure:
        self.close()
        try:
            response = self._streams.send(_build(self._streams, request), stream=True)
        except httpx.RequestError as exc:
            return _failure(exc)
        if not response.is_success:
            try:
                body = response.read()
            except httpx.RequestError as exc:
                return _failure(exc)
            finally:
                response.close()
            return _response(response, body)
        self._stream, self._lines, self._decoder = response, response.iter_lines(), SseDecoder()
        return _response(response)

    def _next_event(self) -> Any:
        if self._lines is None:
            return StreamEnd()
        try:
            for line in self._lines:
                event = self._decoder.feed(line)
                if event is not None:
                    return event
        except httpx.RequestError as exc:
            self.close()
            return _failure(exc)
        last = self._decoder.finish()
        self.close()
        return last if last is not None else StreamEnd()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream = self._lines = None


class _AsyncPerformer:
    """Performs effects with an httpx.AsyncClient; owns at most one open stream."""

    def __init__(self, client: httpx.AsyncClient, streams: httpx.AsyncClient | None = None) -> None:
        self._client = client
        self._streams = streams or client
        self._stream: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None
        self._decoder = SseDecoder()

    async def perform(self, effect: Effect) -> Any:
        if isinstance(effect, HttpRequest):
            try:
                response = await self._client.send(_build(self._client, effect))
            except httpx.RequestError as exc:
                return _failure(exc)
            return _response(response, response.content)
        if isinstance(effect, OpenStream):
            return await self._open(effect.request)
        if isinstance(effect, NextEvent):
            return await self._next_event()
        if isinstance(effect, CloseStream):
            if effect.drain:
                await self._drain()
            await self.close()
            return None
        if isinstance(effect, Sleep):
            if effect.seconds > 0:
                await asyncio.sleep(effect.seconds)
            return None
        if isinstance(effect, Compute):
            return await asyncio.to_thread(effect.function)
        raise TypeError(f"unknown effect {effect!r}")  # pragma: no cover - a bug in a flow

    async def _open(self, request: HttpRequest) -> HttpResponse | TransportFailure:
        await self.close()
        try:
            response = await self._streams.send(_build(self._streams, request), stream=True)
        except httpx.RequestError as exc:
            return _failure(exc)
        if not response.is_success:
            try:
                body = await response.aread()
            except httpx.RequestError as exc:
                return _failure(exc)
            finally:
                await response.aclose()
            return _response(response, body)
        self._stream, self._lines, self._decoder = response, response.aiter_lines(), SseDecoder()
        return _response(response)

    async def _next_event(self) -> Any:
        if self._lines is None:
            return StreamEnd()
        try:
            async for line in self._lines:
                event = self._decoder.feed(line)
                if event is not None:
                    return event
        except httpx.RequestError as exc:
            await self.close()
            return _failure(exc)
        last = self._decoder.finish()
        await self.close()
        return last if last is not None else StreamEnd()

    async def _drain(self) -> None:
        """Read the stream's end for at most DRAIN_SECONDS, so its connection goes back to the pool."""
        if self._lines is None:
            return
        with contextlib.suppress(TimeoutError, httpx.HTTPError):
            async with asyncio.timeout(DRAIN_SECONDS):
                async for _ in self._lines:
                    pass

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
        self._stream = self._lines = None


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


def run_sync(
    flow: Flow[T],
    client: httpx.Client,
    on_emit: EmitHandler | None = None,
    *,
    streams: httpx.Client | None = None,
) -> T:
    """Drive `flow` to its result; emitted values go to `on_emit`."""
    performer = _SyncPerformer(client, streams)
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


def iterate_sync(
    flow: Flow[Any], client: httpx.Client, *, streams: httpx.Client | None = None
) -> Iterator[Any]:
    """Drive `flow`, yielding each emitted value."""
    performer = _SyncPerformer(client, streams)
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


async def run_async(
    flow: Flow[T],
    client: httpx.AsyncClient,
    on_emit: EmitHandler | None = None,
    *,
    streams: httpx.AsyncClient | None = None,
) -> T:
    """Drive `flow` to its result; emitted values go to `on_emit` (awaited when async)."""
    performer = _AsyncPerformer(client, streams)
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


async def iterate_async(
    flow: Flow[Any], client: httpx.AsyncClient, *, streams: httpx.AsyncClient | None = None
) -> AsyncIterator[Any]:
    """Drive `flow`, yielding each emitted value."""
    performer = _AsyncPerformer(client, streams)
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

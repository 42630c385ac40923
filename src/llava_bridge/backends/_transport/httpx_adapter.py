"""httpx behind the transport interface of the drivers: for an injected `http_client=`,
and when proxy variables are set (httpx honours them; our own HTTP/1.1 pools do not).

The same limits as our pools: bodies are read raw and decoded by `BodyDecoder` (capped,
so a gzip bomb stops at the cap), and the whole exchange ends by the request's
`total_timeout`. A sync httpx read cannot be cut short from outside: there the overall
limit is checked between pieces, and each read waits at most the time left when the
request was sent. A request on a kept-alive connection that the server had closed before
reading it is sent once more (httpcore's trace says whether the connection was reused)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from llava_bridge.backends._transport.bodies import ACCEPT_ENCODING, DEFAULT_MAX_RESPONSE_BYTES, BodyDecoder
from llava_bridge.backends._transport.effects import HttpRequest, HttpResponse, TransportFailure
from llava_bridge.backends._transport.failures import closed_before_reading, to_failure
from llava_bridge.backends._transport.pool_base import Broken, ends_at, left, shorter
from llava_bridge.backends._transport.shells import AsyncShell, SyncShell

__all__ = ["HttpxAsync", "HttpxSync", "classify"]


def classify(exc: Exception) -> TransportFailure:
    """Classify an httpx exception (the one table in `failures`)."""
    return to_failure(exc)


class _Connects:
    """httpcore's `trace` callback for one request: whether it opened a connection."""

    __slots__ = ("opened",)

    def __init__(self) -> None:
        self.opened = False

    def __call__(self, name: str, info: dict[str, Any]) -> None:
        if name.startswith("connection.connect_tcp"):
            self.opened = True


class _AsyncConnects(_Connects):
    __slots__ = ()

    async def __call__(self, name: str, info: dict[str, Any]) -> None:  # type: ignore[override]
        if name.startswith("connection.connect_tcp"):
            self.opened = True


def _resend(exc: Exception, watch: _Connects, again: bool) -> bool:
    """Send once more: a reused connection the server had closed before reading the request."""
    return not again and not watch.opened and closed_before_reading(exc)


def _build(
    client: httpx.Client | httpx.AsyncClient, request: HttpRequest, ends: float | None, watch: _Connects
) -> httpx.Request:
    """The httpx request; raises TimeoutError when `ends` has passed already."""
    headers = dict(request.headers)
    content = request.content
    if request.json_body is not None:
        content = json.dumps(request.json_body, separators=(",", ":"), ensure_ascii=False).encode()
        headers.setdefault("Content-Type", "application/json")
    if not any(name.lower() == "accept-encoding" for name in headers):
        headers["Accept-Encoding"] = ACCEPT_ENCODING  # what BodyDecoder decodes
    connect = left(ends, request.connect_timeout, time.monotonic)
    read = left(ends, request.read_timeout, time.monotonic)
    timeout = httpx.Timeout(connect=connect, read=read, write=read, pool=connect)
    return client.build_request(
        request.method,
        request.url,
        headers=headers,
        params=dict(request.params) or None,
        content=content,
        timeout=timeout,
        extensions={"trace": watch},
    )


def _response(response: httpx.Response, body: bytes = b"") -> HttpResponse:
    headers = {key.lower(): value for key, value in response.headers.items()}
    return HttpResponse(response.status_code, headers, body)


def _decoder(response: httpx.Response, limit: int) -> BodyDecoder:
    """The decoder for `response`'s raw body; one built whole (an `httpx.MockTransport`
    response) was decoded by httpx already."""
    encoding = "" if response.is_stream_consumed else response.headers.get("content-encoding", "")
    return BodyDecoder(encoding, limit)


def _raw(response: httpx.Response) -> Iterator[bytes]:
    return iter((response.content,)) if response.is_stream_consumed else response.iter_raw()


async def _araw(response: httpx.Response) -> AsyncIterator[bytes]:
    if response.is_stream_consumed:
        yield response.content
    else:
        async for piece in response.aiter_raw():
            yield piece


class HttpxSync(SyncShell["_SyncBody"]):
    """The sync transport interface over an `httpx.Client`."""

    def __init__(self, client: httpx.Client, *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.client = client
        self.max_response_bytes = max_response_bytes

    def close(self) -> None:
        self.client.close()

    def _start(self, request: HttpRequest) -> tuple[HttpResponse, _SyncBody] | TransportFailure:
        ends = ends_at(request, time.monotonic)
        for again in (False, True):
            watch = _Connects()
            try:
                response = self.client.send(_build(self.client, request, ends, watch), stream=True)
                break
            except TimeoutError as exc:
                return to_failure(exc, sent=False)
            except httpx.RequestError as exc:
                if not _resend(exc, watch, again):
                    return classify(exc)
        return _response(response), _SyncBody(response, _decoder(response, self.max_response_bytes), ends)


class _SyncBody:
    def __init__(self, response: httpx.Response, decoder: BodyDecoder, ends: float | None) -> None:
        self._response = response
        self._decoder = decoder
        self._ends = ends
        self._pieces = _raw(response)

    def read(self, timeout: float | None = None) -> bytes:
        """The next piece; ``b""`` at the end. `timeout` (and the exchange's end) is checked
        between pieces: httpx fixes a sync read's own timeout when it sends the request."""
        ends = self._ends if timeout is None else shorter(self._ends, time.monotonic() + timeout)
        try:
            for raw in self._pieces:
                left(ends, None, time.monotonic)
                piece = self._decoder.decode(raw)
                if piece:
                    return piece
            self._decoder.finish()
            self._response.close()
            return b""
        except Exception as exc:  # httpx's, a broken or over-long body, the time ran out
            self._response.close()
            raise Broken(to_failure(exc)) from None

    def close(self, drain: float = 0.0) -> None:
        self._response.close()


class HttpxAsync(AsyncShell["_AsyncBody"]):
    """The async transport interface over an `httpx.AsyncClient`."""

    def __init__(
        self, client: httpx.AsyncClient, *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    ) -> None:
        self.client = client
        self.max_response_bytes = max_response_bytes

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _start(self, request: HttpRequest) -> tuple[HttpResponse, _AsyncBody] | TransportFailure:
        ends = ends_at(request, time.monotonic)
        for again in (False, True):
            watch = _AsyncConnects()
            try:
                built = _build(self.client, request, ends, watch)
            except TimeoutError as exc:
                return to_failure(exc, sent=False)
            try:
                async with asyncio.timeout(None if ends is None else ends - time.monotonic()):
                    response = await self.client.send(built, stream=True)
                break
            except TimeoutError as exc:  # the whole exchange's time, not one of httpx's
                return to_failure(exc, sent=True)
            except httpx.RequestError as exc:
                if not _resend(exc, watch, again):
                    return classify(exc)
        return _response(response), _AsyncBody(response, _decoder(response, self.max_response_bytes), ends)


class _AsyncBody:
    def __init__(self, response: httpx.Response, decoder: BodyDecoder, ends: float | None) -> None:
        self._response = response
        self._decoder = decoder
        self._ends = ends
        self._pieces = _araw(response)

    async def read(self, timeout: float | None = None) -> bytes:
        """The next piece; ``b""`` at the end. `timeout` bounds this whole read."""
        ends = self._ends if timeout is None else shorter(self._ends, time.monotonic() + timeout)
        try:
            while True:
                wait = left(ends, None, time.monotonic)
                async with asyncio.timeout(wait):
                    raw = await anext(self._pieces, None)
                if raw is None:
                    self._decoder.finish()
                    await self._response.aclose()
                    return b""
                piece = self._decoder.decode(raw)
                if piece:
                    return piece
        except Exception as exc:
            await self._response.aclose()
            raise Broken(to_failure(exc)) from None

    async def close(self, drain: float = 0.0) -> None:
        """With `drain`, read the end for up to that long, so the connection goes back to the pool."""
        if drain > 0:
            with contextlib.suppress(TimeoutError, httpx.HTTPError):
                async with asyncio.timeout(drain):
                    async for _ in self._pieces:
                        pass
        await self._response.aclose()

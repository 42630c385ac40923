"""httpx behind the transport interface of the fal drivers: for an injected `http_client=`,
and when proxy variables are set (httpx honours them; our own HTTP/1.1 pool does not)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator

import httpx

from llava_bridge.backends._transport.effects import HttpRequest, HttpResponse, TransportFailure
from llava_bridge.backends._transport.failures import to_failure
from llava_bridge.backends._transport.pool_base import Broken
from llava_bridge.retry import Failure

__all__ = ["HttpxAsync", "HttpxSync", "classify"]


def classify(exc: Exception) -> TransportFailure:
    """Classify an httpx exception (the one table in `failures`)."""
    return to_failure(exc)


def _build(client: httpx.Client | httpx.AsyncClient, request: HttpRequest) -> httpx.Request:
    headers = dict(request.headers)
    content = request.content
    if request.json_body is not None:
        content = json.dumps(request.json_body, separators=(",", ":"), ensure_ascii=False).encode()
        headers.setdefault("Content-Type", "application/json")
    timeout = httpx.Timeout(
        connect=request.connect_timeout,
        read=request.read_timeout,
        write=request.read_timeout,
        pool=request.connect_timeout,
    )
    return client.build_request(
        request.method,
        request.url,
        headers=headers,
        params=dict(request.params) or None,
        content=content,
        timeout=timeout,
    )


def _response(response: httpx.Response, body: bytes = b"") -> HttpResponse:
    headers = {key.lower(): value for key, value in response.headers.items()}
    return HttpResponse(response.status_code, headers, body)


class HttpxSync:
    """The sync transport interface over an `httpx.Client`."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def send(self, request: HttpRequest) -> HttpResponse | TransportFailure:
        try:
            response = self.client.send(_build(self.client, request))
        except httpx.RequestError as exc:
            return classify(exc)
        return _response(response, response.content)

    def close(self) -> None:
        self.client.close()

    def open(self, request: HttpRequest) -> tuple[HttpResponse, _SyncBody | None] | TransportFailure:
        try:
            response = self.client.send(_build(self.client, request), stream=True)
        except httpx.RequestError as exc:
            return classify(exc)
        if response.is_success:
            return _response(response), _SyncBody(response)
        try:
            return _response(response, response.read()), None
        except httpx.RequestError as exc:
            return classify(exc)
        finally:
            response.close()


class _SyncBody:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._pieces: Iterator[bytes] = response.iter_bytes()

    def read(self, timeout: float | None = None) -> bytes:
        """The next piece; `timeout` is not applied (httpx fixes a sync read's timeout when it
        sends the request)."""
        try:
            return next(self._pieces, b"")
        except httpx.RequestError as exc:
            self._response.close()
            raise Broken(classify(exc)) from None

    def close(self, drain: float = 0.0) -> None:
        self._response.close()


class HttpxAsync:
    """The async transport interface over an `httpx.AsyncClient`."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def send(self, request: HttpRequest) -> HttpResponse | TransportFailure:
        try:
            response = await self.client.send(_build(self.client, request))
        except httpx.RequestError as exc:
            return classify(exc)
        return _response(response, response.content)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def open(self, request: HttpRequest) -> tuple[HttpResponse, _AsyncBody | None] | TransportFailure:
        try:
            response = await self.client.send(_build(self.client, request), stream=True)
        except httpx.RequestError as exc:
            return classify(exc)
        if response.is_success:
            return _response(response), _AsyncBody(response)
        try:
            return _response(response, await response.aread()), None
        except httpx.RequestError as exc:
            return classify(exc)
        finally:
            await response.aclose()


class _AsyncBody:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._pieces: AsyncIterator[bytes] = response.aiter_bytes()

    async def read(self, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await anext(self._pieces, b"")
        except TimeoutError:
            await self._response.aclose()
            raise Broken(TransportFailure(Failure.AFTER_SEND, "timed out", timed_out=True)) from None
        except httpx.RequestError as exc:
            await self._response.aclose()
            raise Broken(classify(exc)) from None

    async def close(self, drain: float = 0.0) -> None:
        """With `drain`, read the end for up to that long, so the connection goes back to the pool."""
        if drain > 0:
            with contextlib.suppress(TimeoutError, httpx.HTTPError):
                async with asyncio.timeout(drain):
                    async for _ in self._pieces:
                        pass
        await self._response.aclose()

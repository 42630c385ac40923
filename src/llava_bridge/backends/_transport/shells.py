"""`send` and `open` on top of a transport's `_start`: the same for our pools and httpx.

A transport starts a request (`_start`: the response head, and its body to read), and
these shells either read the body whole (`send`; `open` for an error status, whose body
the caller wants as a whole) or hand it out to be read piece by piece (`open`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, Protocol, TypeVar

from llava_bridge.backends._transport.effects import HttpRequest, HttpResponse, TransportFailure
from llava_bridge.backends._transport.pool_base import Broken

__all__ = ["AsyncShell", "SyncShell", "aread_all", "read_all"]


class _SyncReadable(Protocol):
    def read(self, timeout: float | None = None) -> bytes: ...


class _AsyncReadable(Protocol):
    async def read(self, timeout: float | None = None) -> bytes: ...


SB = TypeVar("SB", bound=_SyncReadable)
AB = TypeVar("AB", bound=_AsyncReadable)


def read_all(body: _SyncReadable) -> bytes:
    """The rest of `body`; raises `Broken`."""
    pieces = []
    while piece := body.read():
        pieces.append(piece)
    return b"".join(pieces)


async def aread_all(body: _AsyncReadable) -> bytes:
    """The rest of `body`; raises `Broken`."""
    pieces = []
    while piece := await body.read():
        pieces.append(piece)
    return b"".join(pieces)


def _whole(head: HttpResponse, body: bytes) -> HttpResponse:
    return HttpResponse(head.status_code, head.headers, body)


class SyncShell(ABC, Generic[SB]):
    """`send` and `open` for a blocking transport."""

    @abstractmethod
    def _start(self, request: HttpRequest) -> tuple[HttpResponse, SB] | TransportFailure:
        """Send `request` and read the response head (no body yet)."""

    def send(self, request: HttpRequest) -> HttpResponse | TransportFailure:
        """The whole response to `request`, or why there is none."""
        started = self._start(request)
        if isinstance(started, TransportFailure):
            return started
        head, body = started
        try:
            return _whole(head, read_all(body))
        except Broken as exc:
            return exc.failure

    def open(self, request: HttpRequest) -> tuple[HttpResponse, SB | None] | TransportFailure:
        """The response's head and its body to read piece by piece (an error body is read whole)."""
        started = self._start(request)
        if isinstance(started, TransportFailure):
            return started
        head, body = started
        if head.ok:
            return head, body
        try:
            return _whole(head, read_all(body)), None
        except Broken as exc:
            return exc.failure


class AsyncShell(ABC, Generic[AB]):
    """`send` and `open` for an asyncio transport."""

    @abstractmethod
    async def _start(self, request: HttpRequest) -> tuple[HttpResponse, AB] | TransportFailure:
        """Send `request` and read the response head (no body yet)."""

    async def send(self, request: HttpRequest) -> HttpResponse | TransportFailure:
        """The whole response to `request`, or why there is none."""
        started = await self._start(request)
        if isinstance(started, TransportFailure):
            return started
        head, body = started
        try:
            return _whole(head, await aread_all(body))
        except Broken as exc:
            return exc.failure

    async def open(self, request: HttpRequest) -> tuple[HttpResponse, AB | None] | TransportFailure:
        """The response's head and its body to read piece by piece (an error body is read whole)."""
        started = await self._start(request)
        if isinstance(started, TransportFailure):
            return started
        head, body = started
        if head.ok:
            return head, body
        try:
            return _whole(head, await aread_all(body)), None
        except Broken as exc:
            return exc.failure

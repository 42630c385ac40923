"""An asyncio HTTP/1.1 connection pool on bare protocols, for the async drivers.

One pool belongs to one event loop. Reads wait on a future with a timer, not a task,
so a call costs a few callbacks rather than a task switch per read.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import cast

from llava_bridge.backends._transport.bodies import DEFAULT_MAX_RESPONSE_BYTES
from llava_bridge.backends._transport.effects import HttpRequest, HttpResponse, TransportFailure
from llava_bridge.backends._transport.http11 import (
    ClientConnection,
    End,
    Head,
    NeedData,
    Origin,
    UnusableRequest,
)
from llava_bridge.backends._transport.pool_base import (
    KEEPALIVE_EXPIRY,
    MAX_CONNECTIONS,
    Broken,
    IdleSet,
    ends_at,
    failure,
    left,
    prepare,
    response,
    shorter,
    tls_context,
)
from llava_bridge.backends._transport.shells import AsyncShell
from llava_bridge.retry import Failure

__all__ = ["AsyncBody", "AsyncPool"]


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class _Link(asyncio.Protocol):
    """One connection: received bytes queue up until read; writes wait when the socket is full."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin, max_body: int) -> None:
        self.origin = origin
        self.http = ClientConnection(max_body)
        self.idle_since = 0.0
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._received: list[bytes] = []
        self._ended = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._received.append(data)
        _wake(self._waiter)

    def eof_received(self) -> bool:
        self._ended = True
        _wake(self._waiter)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._error = exc
        _wake(self._waiter)
        _wake(self._drain)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        _wake(self._drain)

    # -- what the pool uses ---------------------------------------------------------------

    def stale(self) -> bool:
        transport = self._transport
        return self._ended or bool(self._received) or transport is None or transport.is_closing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def write(self, data: bytes, timeout: float | None) -> None:
        """Hand `data` to the socket; waits while the socket's buffer is full."""
        assert self._transport is not None
        self._transport.write(data)
        while self._paused and not self._ended:
            self._drain = self._loop.create_future()
            await self._wait(self._drain, timeout)
        if self._ended and self._transport.get_write_buffer_size():
            raise self._error or ConnectionError("the connection closed while the request was sent")

    async def read(self, timeout: float | None) -> bytes:
        """What arrived since the last read; ``b""`` once the server ended the connection."""
        if not self._received and not self._ended:
            self._waiter = self._loop.create_future()
            await self._wait(self._waiter, timeout)
        if self._received:
            data = self._received[0] if len(self._received) == 1 else b"".join(self._received)
            self._received.clear()
            return data
        if self._error is not None:
            raise self._error
        return b""

    async def _wait(self, waiter: asyncio.Future[None], timeout: float | None) -> None:
        timer = None if timeout is None else self._loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()


class AsyncPool(AsyncShell["AsyncBody"]):
    """Keep-alive connections per origin for one event loop, at most `max_connections` at once."""

    def __init__(
        self,
        *,
        max_connections: int = MAX_CONNECTIONS,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
        clock: Callable[[], float] = time.monotonic,
        tls: ssl.SSLContext | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._tls = tls
        """The TLS context for https (None: `tls_context()`, made when first needed)."""
        self.max_response_bytes = max_response_bytes
        """The largest decoded response body; a bigger one fails (never retried)."""
        self._clock = clock
        self._connections: IdleSet[_Link] = IdleSet(max_connections, keepalive_expiry, clock)
        self._waiters: deque[asyncio.Future[None]] = deque()

    def close(self) -> None:
        """Close the idle connections; those in use close when they are given back."""
        self._connections.close_idle()
        while self._waiters:
            _wake(self._waiters.popleft())

    async def aclose(self) -> None:
        """`close`, awaitable like httpx's (nothing in it waits)."""
        self.close()

    async def _start(
        self, request: HttpRequest, *, fresh: bool = False
    ) -> tuple[HttpResponse, AsyncBody] | TransportFailure:
        """Send `request` and read the response head. A kept-alive connection the server had
        closed before reading the request is given up and the request sent once more on a
        new connection (`fresh`)."""
        try:
            prepared = prepare(request)
        except UnusableRequest as exc:
            return TransportFailure(Failure.NOT_SENT, str(exc), fatal=True)
        ends = ends_at(request, self._clock)
        try:
            link = await self._acquire(
                prepared.origin, left(ends, request.connect_timeout, self._clock), fresh=fresh
            )
        except OSError as exc:  # TimeoutError included
            return failure(exc, sent=False)
        try:
            data = link.http.start(prepared.method, prepared.target, prepared.headers, prepared.body)
            await link.write(data, left(ends, request.read_timeout, self._clock))
        except UnusableRequest as exc:
            self.release(link, reusable=False)
            return TransportFailure(Failure.NOT_SENT, str(exc), fatal=True)
        except OSError as exc:
            self.release(link, reusable=False)
            if not fresh and link.http.closed_unanswered(exc):
                return await self._start(request, fresh=True)
            return failure(exc, sent=False)
        except BaseException:
            self.release(link, reusable=False)
            raise
        body = AsyncBody(self, link, request.read_timeout, ends)
        try:
            return response(await body.head()), body
        except Broken as exc:
            if exc.resend and not fresh:
                return await self._start(request, fresh=True)
            return exc.failure

    async def _acquire(self, origin: Origin, timeout: float | None, *, fresh: bool = False) -> _Link:
        """A connection to `origin`: an idle one (unless `fresh`), or a new one."""
        connections = self._connections
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else connections.clock() + timeout
        while True:
            if connections.closed:
                raise ConnectionError("the HTTP client was closed")
            link = None if fresh else connections.take(origin)
            if link is not None:
                return link
            if connections.reserve():
                break
            left = None if deadline is None else deadline - connections.clock()
            if left is not None and left <= 0:
                raise TimeoutError("no connection came free in the pool in time")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            timer = None if left is None else loop.call_later(left, _wake, waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass on the wake-up this task can no longer use
                raise
            finally:
                if timer is not None:
                    timer.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        try:
            return await _connect(loop, origin, timeout, self._tls, self.max_response_bytes)
        except BaseException:
            connections.open -= 1
            self._wake_one()
            raise

    def release(self, link: _Link, *, reusable: bool) -> None:
        self._connections.give_back(link, reusable=reusable)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


async def _connect(
    loop: asyncio.AbstractEventLoop,
    origin: Origin,
    timeout: float | None,
    tls: ssl.SSLContext | None,
    max_body: int,
) -> _Link:
    tls = (tls or tls_context()) if origin.tls else None
    async with asyncio.timeout(timeout):
        _, link = await loop.create_connection(
            lambda: _Link(loop, origin, max_body),
            origin.host,
            origin.port,
            ssl=tls,
            server_hostname=origin.host if tls else None,
        )
    return link


class AsyncBody:
    """One response being read on its connection; gives the connection back when done."""

    def __init__(self, pool: AsyncPool, link: _Link, read_timeout: float | None, ends: float | None) -> None:
        self._pool = pool
        self._link: _Link | None = link
        self._timeout = read_timeout
        self._ends = ends
        """When the whole exchange must be over (None: no overall limit)."""

    async def head(self) -> Head:
        event = await self._next(self._timeout)
        if not isinstance(event, Head):  # pragma: no cover - the parser gives the head first
            raise self._broken(RuntimeError("no response head"))
        return event

    async def read(self, timeout: float | None = None) -> bytes:
        """The next piece of the body; ``b""`` at its end. `timeout` bounds this whole read.
        Raises `Broken`."""
        event = await self._next(timeout)
        return event if isinstance(event, bytes) else b""

    async def close(self, drain: float = 0.0) -> None:
        """Stop reading; with `drain`, read the body's end for up to that many seconds first,
        so the connection can be reused."""
        if self._link is None:
            return
        if drain > 0:
            ends = time.monotonic() + drain
            try:
                while self._link is not None and (left := ends - time.monotonic()) > 0:
                    await self.read(left)
            except Broken:
                return
        if self._link is not None:
            self._pool.release(self._link, reusable=False)
            self._link = None

    async def _next(self, timeout: float | None) -> Head | bytes | End:
        """The next event; `timeout` bounds the whole of this call, on top of the exchange's end."""
        link = self._link
        if link is None:
            return End(False)
        http, clock = link.http, self._pool._clock
        ends = self._ends if timeout is None else shorter(self._ends, clock() + timeout)
        try:
            while isinstance(event := http.next_event(), NeedData):
                http.feed(
                    await link.read(self._timeout if ends is None else left(ends, self._timeout, clock))
                )
        except Exception as exc:
            raise self._broken(exc) from None
        except BaseException:  # cancelled: the connection is in an unknown state
            self._broken(asyncio.CancelledError())
            raise
        if isinstance(event, End):
            self._link = None
            self._pool.release(link, reusable=event.reusable)
        return event

    def _broken(self, exc: BaseException) -> Broken:
        link, self._link = self._link, None
        if link is None:
            return Broken(failure(exc, sent=True))
        self._pool.release(link, reusable=False)
        return Broken(failure(exc, sent=True), resend=link.http.closed_unanswered(exc))

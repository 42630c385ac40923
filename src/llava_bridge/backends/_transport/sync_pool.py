"""A blocking HTTP/1.1 connection pool on plain sockets (thread-safe), for the sync drivers."""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Callable

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
    READ_SIZE,
    Broken,
    IdleSet,
    ends_at,
    failure,
    left,
    prepare,
    response,
    shorter,
    tls_context,
    tune,
)
from llava_bridge.backends._transport.shells import SyncShell
from llava_bridge.retry import Failure

__all__ = ["SyncBody", "SyncPool"]


class _Connection:
    __slots__ = ("http", "idle_since", "origin", "sock")

    def __init__(self, sock: socket.socket, origin: Origin, max_body: int) -> None:
        self.sock, self.origin, self.idle_since = sock, origin, 0.0
        self.http = ClientConnection(max_body)

    def stale(self) -> bool:
        """An idle connection with anything to read was closed by the server (or is garbled)."""
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(self.sock, select.POLLIN)
                return bool(poller.poll(0))
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:  # pragma: no cover - closing cannot fail in a way that matters
            pass


class SyncPool(SyncShell["SyncBody"]):
    """Keep-alive connections per origin, at most `max_connections` open at once."""

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
        self._connections: IdleSet[_Connection] = IdleSet(max_connections, keepalive_expiry, clock)
        self._lock = threading.Condition()

    def close(self) -> None:
        """Close the idle connections; those in use close when they are given back."""
        with self._lock:
            self._connections.close_idle()
            self._lock.notify_all()

    def _start(
        self, request: HttpRequest, *, fresh: bool = False
    ) -> tuple[HttpResponse, SyncBody] | TransportFailure:
        """Send `request` and read the response head. A kept-alive connection the server had
        closed before reading the request is given up and the request sent once more on a
        new connection (`fresh`)."""
        try:
            prepared = prepare(request)
        except UnusableRequest as exc:
            return TransportFailure(Failure.NOT_SENT, str(exc), fatal=True)
        ends = ends_at(request, self._clock)
        try:
            connection = self._acquire(
                prepared.origin, left(ends, request.connect_timeout, self._clock), fresh=fresh
            )
        except OSError as exc:  # TimeoutError included
            return failure(exc, sent=False)
        http = connection.http
        try:
            data = http.start(prepared.method, prepared.target, prepared.headers, prepared.body)
            connection.sock.settimeout(left(ends, request.read_timeout, self._clock))
            connection.sock.sendall(data)
        except UnusableRequest as exc:
            self.release(connection, reusable=False)
            return TransportFailure(Failure.NOT_SENT, str(exc), fatal=True)
        except OSError as exc:
            self.release(connection, reusable=False)
            if not fresh and http.closed_unanswered(exc):
                return self._start(request, fresh=True)
            return failure(exc, sent=False)
        except BaseException:  # Ctrl-C mid-send: the connection is in an unknown state
            self.release(connection, reusable=False)
            raise
        body = SyncBody(self, connection, request.read_timeout, ends)
        try:
            return response(body.head()), body
        except Broken as exc:
            if exc.resend and not fresh:
                return self._start(request, fresh=True)
            return exc.failure

    def _acquire(self, origin: Origin, timeout: float | None, *, fresh: bool = False) -> _Connection:
        """A connection to `origin`: an idle one (unless `fresh`), or a new one."""
        connections = self._connections
        deadline = None if timeout is None else connections.clock() + timeout
        with self._lock:
            while True:
                if connections.closed:
                    raise ConnectionError("the HTTP client was closed")
                connection = None if fresh else connections.take(origin)
                if connection is not None:
                    return connection
                if connections.reserve():
                    break
                left = None if deadline is None else deadline - connections.clock()
                if left is not None and left <= 0:
                    raise TimeoutError("no connection came free in the pool in time")
                self._lock.wait(left)
        try:
            return _Connection(_connect(origin, timeout, self._tls), origin, self.max_response_bytes)
        except BaseException:
            with self._lock:
                connections.open -= 1
                self._lock.notify()
            raise

    def release(self, connection: _Connection, *, reusable: bool) -> None:
        with self._lock:
            self._connections.give_back(connection, reusable=reusable)
            self._lock.notify()


def _connect(origin: Origin, timeout: float | None, tls: ssl.SSLContext | None) -> socket.socket:
    sock = socket.create_connection((origin.host, origin.port), timeout=timeout)
    try:
        tune(sock)
        if origin.tls:
            sock = (tls or tls_context()).wrap_socket(sock, server_hostname=origin.host)
    except BaseException:
        sock.close()
        raise
    return sock


class SyncBody:
    """One response being read on its connection; gives the connection back when done."""

    def __init__(
        self, pool: SyncPool, connection: _Connection, read_timeout: float | None, ends: float | None
    ) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self._timeout = read_timeout
        self._applied = connection.sock.gettimeout()
        self._ends = ends
        """When the whole exchange must be over (None: no overall limit)."""

    def head(self) -> Head:
        event = self._next(self._timeout)
        if not isinstance(event, Head):  # pragma: no cover - the parser gives the head first
            raise self._broken(RuntimeError("no response head"))
        return event

    def read(self, timeout: float | None = None) -> bytes:
        """The next piece of the body; ``b""`` at its end. `timeout` bounds this whole read.
        Raises `Broken`."""
        event = self._next(timeout)
        return event if isinstance(event, bytes) else b""

    def close(self, drain: float = 0.0) -> None:
        """Stop reading; with `drain`, read the body's end for up to that many seconds first,
        so the connection can be reused."""
        if self._connection is None:
            return
        if drain > 0:
            ends = time.monotonic() + drain
            try:
                while self._connection is not None and (left := ends - time.monotonic()) > 0:
                    self.read(left)
            except Broken:
                return
        if self._connection is not None:
            self._pool.release(self._connection, reusable=False)
            self._connection = None

    def _next(self, timeout: float | None) -> Head | bytes | End:
        """The next event; `timeout` bounds the whole of this call, on top of the exchange's end."""
        connection = self._connection
        if connection is None:
            return End(False)
        http, sock, clock = connection.http, connection.sock, self._pool._clock
        ends = self._ends if timeout is None else shorter(self._ends, clock() + timeout)
        try:
            while isinstance(event := http.next_event(), NeedData):
                wait = self._timeout if ends is None else left(ends, self._timeout, clock)
                if wait != self._applied:
                    sock.settimeout(wait)
                    self._applied = wait
                http.feed(sock.recv(READ_SIZE))
        except Exception as exc:
            raise self._broken(exc) from None
        except BaseException:  # Ctrl-C: the connection is in an unknown state
            self._broken(KeyboardInterrupt())
            raise
        if isinstance(event, End):
            self._connection = None
            self._pool.release(connection, reusable=event.reusable)
        return event

    def _broken(self, exc: BaseException) -> Broken:
        connection, self._connection = self._connection, None
        if connection is None:
            return Broken(failure(exc, sent=True))
        self._pool.release(connection, reusable=False)
        return Broken(failure(exc, sent=True), resend=connection.http.closed_unanswered(exc))

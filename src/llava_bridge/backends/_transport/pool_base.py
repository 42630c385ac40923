"""What the sync and async HTTP/1.1 shells share: the request on the wire, TLS, and
how a failure is told apart (could the server have acted on the request?)."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from llava_bridge.backends._transport.effects import HttpRequest, HttpResponse, TransportFailure
from llava_bridge.backends._transport.failures import to_failure
from llava_bridge.backends._transport.http11 import Head, Origin, origin_and_target, request_headers

__all__ = [
    "KEEPALIVE_EXPIRY",
    "MAX_CONNECTIONS",
    "READ_SIZE",
    "Broken",
    "IdleSet",
    "Prepared",
    "failure",
    "ends_at",
    "left",
    "prepare",
    "response",
    "shorter",
    "tls_context",
    "tune",
]

MAX_CONNECTIONS = 256
"""Connections one pool holds open at once (in use and idle); more callers wait."""
KEEPALIVE_EXPIRY = 5.0
"""Seconds an idle connection is kept for reuse (servers commonly drop theirs after 5 s)."""
READ_SIZE = 256 * 1024

_tls: ssl.SSLContext | None = None
_tls_lock = threading.Lock()


class Broken(Exception):
    """A response could not be read to its end; carries the classified failure.

    `resend`: the server had closed the kept-alive connection before this request
    reached it (see `ClientConnection.closed_unanswered`); the shells send it again, once,
    on a new connection."""

    def __init__(self, failure: TransportFailure, *, resend: bool = False) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.resend = resend


class Prepared:
    """A request ready for a connection: where it goes, its target, headers and body."""

    __slots__ = ("body", "headers", "method", "origin", "target")

    def __init__(
        self, method: str, origin: Origin, target: str, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> None:
        self.method, self.origin, self.target, self.headers, self.body = method, origin, target, headers, body


def prepare(request: HttpRequest) -> Prepared:
    """Check and frame `request`; raises `UnusableRequest` when it cannot be sent as given."""
    origin, target = origin_and_target(request.url, request.params)
    headers = dict(request.headers)
    body = request.content
    if request.json_body is not None:
        body = json.dumps(request.json_body, separators=(",", ":"), ensure_ascii=False).encode()
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
    return Prepared(
        request.method, origin, target, request_headers(request.method, origin, headers, body), body
    )


def response(head: Head, body: bytes = b"") -> HttpResponse:
    return HttpResponse(head.status_code, head.headers, body)


def failure(exc: BaseException, *, sent: bool) -> TransportFailure:
    """Classify `exc`: `sent` says whether the whole request had gone out when it happened."""
    return to_failure(exc, sent=sent)


def ends_at(request: HttpRequest, clock: Callable[[], float]) -> float | None:
    """When the whole exchange for `request` must be over (None: no overall limit)."""
    return None if request.total_timeout is None else clock() + request.total_timeout


def left(ends: float | None, limit: float | None, clock: Callable[[], float]) -> float | None:
    """`limit` cut to what is left before `ends`; raises TimeoutError once `ends` has passed."""
    if ends is None:
        return limit
    remaining = ends - clock()
    if remaining <= 0:
        raise TimeoutError("the call's time ran out")
    return remaining if limit is None else min(limit, remaining)


def shorter(limit: float | None, other: float | None) -> float | None:
    """The smaller of two time limits, where None is no limit."""
    if limit is None:
        return other
    return limit if other is None else min(limit, other)


def tls_context() -> ssl.SSLContext:
    """One verifying client context per process: SSL_CERT_FILE/SSL_CERT_DIR when set, else certifi's CAs."""
    global _tls
    with _tls_lock:
        if _tls is None:
            cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
            if not cafile and not capath:
                try:
                    import certifi

                    cafile = certifi.where()
                except ImportError:  # pragma: no cover - httpx brings certifi
                    pass
            context = ssl.create_default_context(cafile=cafile or None, capath=capath or None)
            context.set_alpn_protocols(["http/1.1"])
            _tls = context
        return _tls


def tune(sock: socket.socket) -> None:
    """Small requests go out at once (no Nagle delay)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Connection(Protocol):
    origin: Origin
    idle_since: float

    def stale(self) -> bool: ...

    def close(self) -> None: ...


C = TypeVar("C", bound=Connection)


class IdleSet(Generic[C]):
    """The bookkeeping of a pool, without its locking or waiting: idle connections per
    origin (newest last), and how many connections are open in all."""

    def __init__(self, max_connections: int, keepalive_expiry: float, clock: Callable[[], float]) -> None:
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.clock = clock
        self.open = 0
        self.closed = False
        self._idle: dict[Origin, list[C]] = {}

    def take(self, origin: Origin) -> C | None:
        """The most recently idled live connection to `origin`; stale or expired ones are closed."""
        idle = self._idle.get(origin)
        now = self.clock()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < self.keepalive_expiry and not connection.stale():
                return connection
            self.open -= 1
            connection.close()
        return None

    def reserve(self) -> bool:
        """Count a new connection in, if the limit allows one (closing the oldest idle one if need be)."""
        if self.open >= self.max_connections:
            candidates = [(idle[0].idle_since, origin) for origin, idle in self._idle.items() if idle]
            if not candidates:
                return False
            self._idle[min(candidates)[1]].pop(0).close()
            self.open -= 1
        self.open += 1
        return True

    def give_back(self, connection: C, *, reusable: bool) -> None:
        if reusable and not self.closed:
            connection.idle_since = self.clock()
            self._idle.setdefault(connection.origin, []).append(connection)
        else:
            self.open -= 1
            connection.close()

    def close_idle(self) -> None:
        """Close every idle connection; from now on, given-back ones are closed too."""
        self.closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
            self.open -= len(idle)
        self._idle.clear()

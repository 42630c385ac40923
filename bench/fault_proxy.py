"""A fault-injecting HTTP/1.1 proxy on 127.0.0.1, for the soak benchmark and reliability tests.

It sits between a client (`FalBackend`) and an upstream server (`llava-bridge serve`) and
passes every request on, except that a fraction `fault_rate` of them get one of
`FAULTS` instead:

- ``reset_before``: the request is read, never forwarded, and the connection is reset.
- ``reset_after``: the request is forwarded and answered upstream (a submit is queued),
  then the connection is reset instead of passing the answer on.
- ``rate_limit``: ``429`` with ``Retry-After: 1``, not forwarded.
- ``ingress_502``: an nginx ``502`` HTML page with no ``x-fal-request-id``, not forwarded.
- ``fal_503``: fal's own ``503`` (JSON, ``error_type``, ``x-fal-request-id``), not forwarded.
- ``stall``: wait `stall_s` seconds (3 by default), then forward normally.
- ``truncated``: forward, then pass the answer on with its body cut in half.

`routes` limits the faults to some routes (see `route_of`: submit, status,
status_stream, result, cancel, other).

Each request is forwarded on a fresh upstream connection with ``Connection: close``, so
the answer is whatever arrives before the upstream closes (a status stream is passed on
as it comes). When the upstream is down (a restart), the proxy answers the nginx 502,
as fal's ingress would. `counts` tallies requests and faults by route.

Run it alone::

    python bench/fault_proxy.py --upstream 127.0.0.1:8000 --fault-rate 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import socket
import struct
import threading
import uuid
from collections import Counter
from collections.abc import Sequence

__all__ = ["FAULTS", "FaultProxy", "route_of"]

FAULTS = ("reset_before", "reset_after", "rate_limit", "ingress_502", "fal_503", "stall", "truncated")
NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
MAX_HEAD = 64 * 1024
_CONTENT_LENGTH = re.compile(rb"^content-length:\s*(\d+)\s*$", re.I | re.M)


def route_of(method: str, path: str) -> str:
    """A short name for what a request does: submit, status, status_stream, result, cancel, other."""
    path = path.split("?", 1)[0]
    if method == "POST" and path.count("/") == 2:
        return "submit"
    if "/requests/" in path:
        if method == "PUT":
            return "cancel"
        if path.endswith("/status/stream"):
            return "status_stream"
        if path.endswith("/status"):
            return "status"
        return "result"
    return "other"


class FaultProxy:
    """The proxy; `start()` runs it on its own event loop in a daemon thread."""

    def __init__(
        self,
        upstream_port: int,
        *,
        fault_rate: float = 0.1,
        faults: Sequence[str] = FAULTS,
        stall_s: float = 3.0,
        routes: Sequence[str] | None = None,
        seed: int = 0,
        port: int = 0,
    ) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {FAULTS}")
        self.upstream_port = upstream_port
        self.fault_rate = fault_rate
        self.faults = tuple(faults)
        self.stall_s = stall_s
        self.routes = None if routes is None else frozenset(routes)
        """Only these routes get faults (None: all)."""
        self.max_faults: int | None = None
        """Stop injecting after this many faults (None: no limit)."""
        self.counts: Counter[tuple[str, str]] = Counter()
        """(route, fault or "ok") -> requests."""
        self._rng = random.Random(seed)
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._shutdown.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def faulted(self) -> int:
        """Requests that got a fault."""
        return sum(n for (_, fault), n in self.counts.items() if fault != "ok")

    # -- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._shutdown = asyncio.Event()
        self._server = await asyncio.start_server(
            self._connection, "127.0.0.1", self._port, reuse_address=True, backlog=1024, limit=MAX_HEAD
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._shutdown.wait()
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _pick(self, route: str) -> str:
        with self._lock:
            eligible = self.routes is None or route in self.routes
            budget_left = self.max_faults is None or self.faulted() < self.max_faults
            hit = eligible and budget_left and self._rng.random() < self.fault_rate
            fault = self._rng.choice(self.faults) if hit else "ok"
            self.counts[(route, fault)] += 1
        return fault

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # a strong reference, so a waiting connection is never collected
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                head, body, method, path = request
                fault = self._pick(route_of(method, path))
                keep_open = await self._answer(writer, head, body, fault)
                if not keep_open:
                    break
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, head: bytes, body: bytes, fault: str) -> bool:
        """Answer one request; False when the client connection is done with."""
        if fault == "reset_before":
            _reset(writer)
            return False
        if fault == "rate_limit":
            await _send(
                writer,
                429,
                b'{"detail":"Too many requests; slow down."}',
                "application/json",
                {"Retry-After": "1"},
            )
            return True
        if fault == "ingress_502":
            await _send(writer, 502, NGINX_502, "text/html", {})
            return True
        if fault == "fal_503":
            payload = {
                "detail": "No runner could take the request.",
                "error_type": "runner_scheduling_failure",
            }
            headers = {"x-fal-request-id": uuid.uuid4().hex, "x-fal-error-type": "runner_scheduling_failure"}
            await _send(writer, 503, json.dumps(payload).encode(), "application/json", headers)
            return True
        if fault == "stall":
            await asyncio.sleep(self.stall_s)
        return await self._forward(writer, head, body, fault)

    async def _forward(self, writer: asyncio.StreamWriter, head: bytes, body: bytes, fault: str) -> bool:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:  # the upstream is down (restarting): what fal's ingress answers
            await _send(writer, 502, NGINX_502, "text/html", {})
            return True
        try:
            up_writer.write(_with_connection_close(head) + body)
            await up_writer.drain()
            if fault == "reset_after":
                await up_reader.readuntil(b"\r\n\r\n")  # the upstream has answered: the work is done
                _reset(writer)
                return False
            if fault == "truncated":
                answer = await up_reader.read()
                writer.write(_truncated(answer))
                await writer.drain()
                return False
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
            return False  # the upstream said Connection: close; so do we
        finally:
            with contextlib.suppress(Exception):
                up_writer.close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes, str, str] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    first = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    if len(first) != 3:
        raise ValueError("bad request line")
    if re.search(rb"^transfer-encoding:", head, re.I | re.M):
        raise ValueError("chunked request bodies are not supported")
    match = _CONTENT_LENGTH.search(head)
    body = await reader.readexactly(int(match.group(1))) if match else b""
    return head, body, first[0], first[1]


def _with_connection_close(head: bytes) -> bytes:
    lines = [line for line in head[:-4].split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


def _truncated(answer: bytes) -> bytes:
    """The answer with its body cut in half (Content-Length fixed, so the JSON is what breaks)."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep or not _CONTENT_LENGTH.search(head):
        return answer[: len(answer) * 3 // 4]  # a stream: cut it off mid-way
    cut = body[: len(body) // 2]
    return _CONTENT_LENGTH.sub(b"content-length: " + str(len(cut)).encode(), head, count=1) + sep + cut


async def _send(
    writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str, headers: dict[str, str]
) -> None:
    reason = {429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "Error")
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a clean FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the server (127.0.0.1 only)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    proxy = FaultProxy(int(args.upstream.rsplit(":", 1)[1]), fault_rate=args.fault_rate, seed=args.seed)
    proxy._port = args.port
    with proxy:
        print(f"fault proxy on {proxy.url} -> {args.upstream}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()

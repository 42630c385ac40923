"""A fal-protocol HTTP server on 127.0.0.1 that injects faults on command, for tests and benchmarks.

It speaks what `FalBackend` speaks, with the `base_url` layout of `llava_bridge.backends.fal.backend`:
queue routes at the root, sync run and ``/stream`` under ``/run``, storage under ``/rest``,
CDN uploads under ``/cdn`` (plus ``/gcs/{key}`` as the signed PUT target of the upload fallback).

Jobs are simulated: a job waits `queue_seconds` IN_QUEUE, then runs `job_seconds`
IN_PROGRESS (spreading `log_lines` over that time), then completes with
``{"output": responder(input)}``. The default responder describes the image it got
(its size, decoded from the data URI or the uploaded file) and echoes the prompt.
These times (and the sync run's and ``/stream``'s) are kept to ~0.1 ms, not the ~1 ms of an
event-loop timer (see `_sleep_until`), so that a benchmark's "latency added over a job of T"
is not charged the server's timer error; COMPLETED reports the run time as
``metrics.inference_time``.

Faults, queued per route with `fail(route, kind, times=1, **params)`; routes are
``submit, status, status_stream, result, cancel, run, stream, token, cdn_upload,
initiate, gcs_put``:

- ``http``: answer ``code`` with ``body`` (JSON or text) and ``headers`` instead.
  Helpers: `ingress_error(code)` (nginx HTML, no ``x-fal-request-id``),
  `fal_error(code, error_type)` (JSON detail, with ``x-fal-request-id``).
- ``reset_after``: do the work (a submit is queued), then reset the connection
  instead of answering.
- ``stall``: wait ``seconds`` before answering; on ``status_stream``, send the headers and
  then nothing for ``seconds``.
- ``stall_after``: on ``stream``, send ``events`` events, then nothing for ``seconds``.
- ``truncate``: answer 200 with the JSON body cut in half.
- ``break_after``: on ``status_stream``, send ``events`` events, then reset the connection.
- ``linger``: on ``status_stream``, keep the stream open ``seconds`` after COMPLETED
  (sending nothing) before ending it.

`refuse_connections(hold)` closes the listening socket for `hold` seconds, so new
connections are refused (a reset before any request is received). Connection-level
faults go through a small TCP front in front of uvicorn: `url` is the front,
`direct_url` is uvicorn itself (no front: faster, for benchmarks).

Run it alone (for benchmarks in another process)::

    python tests/fal/fal_test_server.py --job-seconds 0.3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import importlib.util
import io
import itertools
import json
import socket
import struct
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["FalTestServer", "Recorded", "ServerJob", "fal_error", "ingress_error"]

KILL_MARKER = b"x-test-kill-connection"
NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
ROUTES = (
    "submit",
    "status",
    "status_stream",
    "result",
    "cancel",
    "run",
    "stream",
    "token",
    "cdn_upload",
    "initiate",
    "gcs_put",
    "cdn_get",
)


_KEYED_ROUTES = (
    "submit",
    "status",
    "status_stream",
    "result",
    "cancel",
    "run",
    "stream",
    "token",
    "initiate",
)


def ingress_error(code: int = 502) -> dict[str, Any]:
    """Params for `fail(route, "http", ...)`: an nginx error page without x-fal-request-id."""
    return {"code": code, "body": NGINX_502.replace("502 Bad Gateway", f"{code} Error"), "headers": {}}


def fal_error(code: int = 503, error_type: str = "runner_scheduling_failure") -> dict[str, Any]:
    """Params for `fail(route, "http", ...)`: an error fal itself sends (with x-fal-request-id)."""
    return {
        "code": code,
        "body": {"detail": "No runner could take the request.", "error_type": error_type},
        "headers": {"x-fal-request-id": f"fal-{uuid.uuid4().hex[:8]}", "x-fal-error-type": error_type},
    }


@dataclass
class Recorded:
    """One request the server received."""

    route: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ServerJob:
    """A simulated fal job."""

    id: str
    endpoint: str
    input: dict[str, Any]
    status: str = "IN_QUEUE"
    logs: list[dict[str, Any]] = field(default_factory=list)
    output: str | None = None
    error: str | None = None
    error_type: str | None = None
    cancelled: bool = False
    result_fetches: int = 0
    started: float | None = None
    """`time.monotonic()` when the job went IN_PROGRESS."""
    inference_time: float = 0.0
    """What COMPLETED reports in ``metrics``: the server's `job_seconds` when the job started (the
    timer keeps the real run time within ~0.1 ms of it), or the time spent IN_PROGRESS before a
    cancel."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def touch(self) -> None:
        event, self.changed = self.changed, asyncio.Event()
        event.set()


@dataclass
class _Fault:
    kind: str
    params: dict[str, Any]


def default_responder(server: FalTestServer, arguments: dict[str, Any]) -> str:
    """'I see a WxH image. You asked: <prompt>' (size from the image the server got)."""
    size = server.image_size(str(arguments.get("image_url", "")))
    seen = f"a {size[0]}x{size[1]} image" if size else "an image I cannot open"
    return f"I see {seen}. You asked: {arguments.get('prompt', '')}"


class FalTestServer:
    """Start with `with FalTestServer() as server:`; point `FalBackend(base_url=server.url)` at it."""

    def __init__(
        self,
        *,
        job_seconds: float = 0.05,
        queue_seconds: float = 0.0,
        log_lines: tuple[str, ...] = ("loading model", "generating"),
        stream_words: int = 6,
        require_key: str | None = None,
        record: bool = True,
        fast: bool = False,
    ) -> None:
        self.job_seconds = job_seconds
        self.queue_seconds = queue_seconds
        self.log_lines = log_lines
        self.stream_words = stream_words
        self.require_key = require_key
        self.record = record
        self.fast = fast
        """uvloop and httptools when installed (for benchmarks; tests use asyncio and h11)."""
        self.responder: Callable[[FalTestServer, dict[str, Any]], str] = default_responder
        self.job_error: tuple[str, str] | None = None
        """(error, error_type) every job completes with, when set."""
        self.requests: list[Recorded] = []
        self.jobs: dict[str, ServerJob] = {}
        self.files: dict[str, bytes] = {}
        self._faults: dict[str, deque[_Fault]] = defaultdict(deque)
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._front: asyncio.Server | None = None
        self.port = 0
        self.direct_port = 0
        self._refusing = False
        self.connections = 0
        """TCP connections the front has accepted (since start; `reset` zeroes it)."""

    # -- control -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def direct_url(self) -> str:
        return f"http://127.0.0.1:{self.direct_port}"

    def reset(self, **settings: Any) -> None:
        """Forget faults, requests, jobs and files; restore (or set) the job settings."""
        self._faults.clear()
        self.requests.clear()
        self.jobs.clear()
        self.files.clear()
        self.responder = default_responder
        self.job_error = None
        self.connections = 0
        defaults = {
            "job_seconds": 0.05,
            "queue_seconds": 0.0,
            "log_lines": ("loading model", "generating"),
            "stream_words": 6,
            "require_key": None,
        }
        for name, value in {**defaults, **settings}.items():
            setattr(self, name, value)

    def fail(self, route: str, kind: str, *, times: int = 1, **params: Any) -> None:
        """Make the next `times` calls of `route` fail with fault `kind`."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}")
        for _ in range(times):
            self._faults[route].append(_Fault(kind, params))

    def refuse_connections(self, hold: float) -> None:
        """Close the front's listening socket now; reopen it after `hold` seconds."""
        assert self._loop is not None
        done = threading.Event()

        def close() -> None:
            assert self._front is not None
            self._front.close()
            self._refusing = True
            self._loop.call_later(hold, lambda: asyncio.ensure_future(self._listen_front(self.port)))  # type: ignore[union-attr]
            done.set()

        self._loop.call_soon_threadsafe(close)
        done.wait(5)

    def calls(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.route == route]

    def image_size(self, image_url: str) -> tuple[int, int] | None:
        data = self.image_bytes(image_url)
        if data is None:
            return None
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        except OSError:
            return None

    def image_bytes(self, image_url: str) -> bytes | None:
        if image_url.startswith("data:"):
            try:
                return base64.b64decode(image_url.split(",", 1)[1])
            except (IndexError, binascii.Error):
                return None
        marker = "/cdn/files/"
        if marker in image_url:
            return self.files.get(image_url.rsplit(marker, 1)[1])
        return None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FalTestServer:
        self._thread = threading.Thread(target=self._run, name="fal-test-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("fal test server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FalTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=_uvloop_factory() if self.fast else None) as runner:
            runner.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        sock = socket.socket(
            socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
        )  # asyncio sets TCP_NODELAY only then
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.direct_port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            log_level="critical",
            lifespan="off",
            access_log=False,
            timeout_keep_alive=30,
            http="httptools" if self.fast and _has("httptools") else "h11",
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        await self._listen_front(0)
        while not server.started:
            await asyncio.sleep(0.005)
        self._ready.set()
        await self._stop.wait()
        server.should_exit = server.force_exit = True
        if self._front is not None:
            self._front.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 5)

    # -- the TCP front: connection-level faults ------------------------------------------------

    async def _listen_front(self, port: int) -> None:
        self._front = await asyncio.start_server(self._proxy, "127.0.0.1", port, reuse_address=True)
        self.port = self._front.sockets[0].getsockname()[1]
        self._refusing = False

    async def _proxy(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.direct_port)
        except OSError:
            client_writer.close()
            return

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if KILL_MARKER in data:
                    _reset(client_writer)
                    return
                client_writer.write(data)
                await client_writer.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_writer, up_writer):
            with contextlib.suppress(Exception):
                writer.close()

    # -- the app -------------------------------------------------------------------------------

    def _app(self) -> Callable[[Any, Any, Any], Awaitable[None]]:
        """A bare ASGI app (no router, no middleware: the server's own cost stays small)."""

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            request = Request(scope, receive)
            if request.method not in ("GET", "POST", "PUT"):
                response: Response = JSONResponse({"detail": "Method Not Allowed"}, status_code=405)
            else:
                response = await self._dispatch(request)
            await response(scope, receive, send)

        return app

    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path
        route, parts = _route_of(request.method, path)
        body = await request.body()
        if self.record:
            self.requests.append(
                Recorded(route, request.method, path, dict(request.query_params), dict(request.headers), body)
            )
        if route == "unknown":
            return JSONResponse({"detail": f"No route {request.method} {path}"}, status_code=404)
        if (
            self.require_key is not None
            and route in _KEYED_ROUTES
            and request.headers.get("authorization") != f"Key {self.require_key}"
        ):
            return JSONResponse({"detail": "Invalid or missing API key"}, status_code=401)
        fault = self._faults[route].popleft() if self._faults[route] else None
        if fault is not None and fault.kind == "http":
            return _http_fault(fault.params)
        if fault is not None and fault.kind == "stall" and route != "status_stream":
            await asyncio.sleep(float(fault.params.get("seconds", 1.0)))
        response = await self._handle(route, parts, request, body, fault)
        if fault is not None and fault.kind == "reset_after":
            response.headers[KILL_MARKER.decode()] = "1"
        if fault is not None and fault.kind == "truncate" and isinstance(response, JSONResponse):
            cut = bytes(response.body)[: max(1, len(response.body) // 2)]
            return Response(cut, status_code=200, media_type="application/json", headers=_fal_id(parts))
        return response

    async def _handle(
        self, route: str, parts: dict[str, str], request: Request, body: bytes, fault: _Fault | None
    ) -> Response:
        if route == "submit":
            return self._submit(parts["endpoint"], body, request)
        if route == "run":
            return await self._run_sync(parts["endpoint"], body)
        if route == "stream":
            return self._stream(parts["endpoint"], body, fault)
        if route == "token":
            expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            return JSONResponse(
                {
                    "token": "cdn-token",
                    "token_type": "Bearer",
                    "base_url": f"{self.url}/cdn",
                    "expires_at": expires,
                }
            )
        if route == "cdn_upload":
            if request.headers.get("authorization") != "Bearer cdn-token":
                return JSONResponse({"detail": "bad CDN token"}, status_code=401)
            key = f"{uuid.uuid4().hex}"
            self.files[key] = body
            return JSONResponse({"access_url": f"{self.url}/cdn/files/{key}"})
        if route == "cdn_get":
            data = self.files.get(parts["key"])
            return Response(data, media_type="image/jpeg") if data else Response(status_code=404)
        if route == "initiate":
            key = f"{uuid.uuid4().hex}"
            return JSONResponse(
                {"upload_url": f"{self.url}/gcs/{key}", "file_url": f"{self.url}/cdn/files/{key}"}
            )
        if route == "gcs_put":
            self.files[parts["key"]] = body
            return Response(status_code=200)
        job = self.jobs.get(parts["request_id"])
        if job is None:
            return JSONResponse({"detail": f"Request {parts['request_id']} not found"}, status_code=404)
        if route == "status":
            return self._status(job, request.query_params.get("logs") in ("1", "true"))
        if route == "status_stream":
            return self._status_stream(job, request.query_params.get("logs") in ("1", "true"), fault)
        if route == "result":
            return self._result(job)
        return self._cancel(job)

    def _submit(self, endpoint: str, body: bytes, request: Request) -> Response:
        job = ServerJob(
            id=f"req-{next(self._ids):05d}-{uuid.uuid4().hex[:6]}", endpoint=endpoint, input=json.loads(body)
        )
        self.jobs[job.id] = job
        asyncio.get_running_loop().create_task(self._work(job))
        base = f"{str(request.base_url).rstrip('/')}/{'/'.join(endpoint.split('/')[:2])}/requests/{job.id}"
        return JSONResponse(
            {
                "request_id": job.id,
                "response_url": base,
                "status_url": f"{base}/status",
                "cancel_url": f"{base}/cancel",
                "status": "IN_QUEUE",
                "queue_position": 0,
            },
            headers={"x-fal-request-id": job.id},
        )

    async def _work(self, job: ServerJob) -> None:
        if self.queue_seconds:
            await _sleep_until(time.monotonic() + self.queue_seconds)
        if job.cancelled:
            return
        job.status = "IN_PROGRESS"
        job.touch()
        job.started = start = time.monotonic()
        run = self.job_seconds
        steps = len(self.log_lines) + 1
        for index, line in enumerate(self.log_lines, 1):
            await _sleep_until(start + run * index / steps)
            if job.cancelled:
                return
            job.logs.append(
                {
                    "message": line,
                    "level": "INFO",
                    "source": "USER",
                    "timestamp": datetime.now(UTC).isoformat(),
                }
            )
            job.touch()
        await _sleep_until(start + run)
        if job.cancelled:
            return
        job.inference_time = run
        if self.job_error is not None:
            job.error, job.error_type = self.job_error
        else:
            job.output = self.responder(self, job.input)
        job.status = "COMPLETED"
        job.touch()

    def _status_body(self, job: ServerJob, logs: list[dict[str, Any]] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"status": job.status, "request_id": job.id, "logs": logs}
        if job.status == "IN_QUEUE":
            body["queue_position"] = 0
        if job.status == "COMPLETED":
            body["metrics"] = {"inference_time": job.inference_time}
            if job.error is not None:
                body["error"], body["error_type"] = job.error, job.error_type
        return body

    def _status(self, job: ServerJob, with_logs: bool) -> Response:
        body = self._status_body(job, list(job.logs) if with_logs else None)
        return JSONResponse(
            body,
            status_code=200 if job.status == "COMPLETED" else 202,
            headers=_fal_id({"request_id": job.id}),
        )

    def _status_stream(self, job: ServerJob, with_logs: bool, fault: _Fault | None) -> Response:
        async def events() -> AsyncIterator[bytes]:
            if fault is not None and fault.kind == "stall":
                await asyncio.sleep(float(fault.params.get("seconds", 1.0)))
                return
            limit = (
                int(fault.params.get("events", 1))
                if fault is not None and fault.kind == "break_after"
                else None
            )
            sent_logs, last, count = 0, None, 0
            while True:
                changed = job.changed
                state = (job.status, len(job.logs))
                if state != last:
                    logs = job.logs[sent_logs:] if with_logs else None
                    sent_logs = len(job.logs)
                    last = state
                    yield f"data: {json.dumps(self._status_body(job, logs))}\n\n".encode()
                    count += 1
                    if limit is not None and count >= limit:
                        yield b": " + KILL_MARKER + b"\n\n"
                        return
                if job.status == "COMPLETED":
                    if fault is not None and fault.kind == "linger":
                        await asyncio.sleep(float(fault.params.get("seconds", 1.0)))
                    return
                await changed.wait()

        return _SseResponse(events(), _fal_id({"request_id": job.id}))

    def _result(self, job: ServerJob) -> Response:
        if job.status != "COMPLETED":
            return JSONResponse({"detail": "Request is still in progress"}, status_code=400)
        job.result_fetches += 1
        if job.error is not None:
            return JSONResponse(
                {"detail": job.error}, status_code=500, headers=_fal_id({"request_id": job.id})
            )
        return JSONResponse({"output": job.output}, headers=_fal_id({"request_id": job.id}))

    def _cancel(self, job: ServerJob) -> Response:
        if job.status == "COMPLETED":
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        job.cancelled = True
        job.inference_time = 0.0 if job.started is None else time.monotonic() - job.started
        job.status, job.error, job.error_type = "COMPLETED", "Request was cancelled", "client_cancelled"
        job.touch()
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    async def _run_sync(self, endpoint: str, body: bytes) -> Response:
        arguments = json.loads(body)
        await _sleep_until(time.monotonic() + self.job_seconds)
        request_id = f"run-{next(self._ids):05d}"
        return JSONResponse(
            {"output": self.responder(self, arguments)}, headers={"x-fal-request-id": request_id}
        )

    def _stream(self, endpoint: str, body: bytes, fault: _Fault | None) -> Response:
        arguments = json.loads(body)
        text = self.responder(self, arguments)
        words = text.split(" ")
        per = max(1, -(-len(words) // self.stream_words))
        cuts = [" ".join(words[: i + per]) for i in range(0, len(words), per)]

        async def events() -> AsyncIterator[bytes]:
            start, run = time.monotonic(), self.job_seconds
            for index, partial in enumerate(cuts, 1):
                await _sleep_until(start + run * index / len(cuts))
                yield f"data: {json.dumps({'output': partial, 'partial': True})}\n\n".encode()
                if fault is not None and fault.kind == "stall_after" and index >= fault.params["events"]:
                    await asyncio.sleep(float(fault.params.get("seconds", 1.0)))
            yield f"data: {json.dumps({'output': text, 'partial': False})}\n\n".encode()

        request_id = f"stream-{next(self._ids):05d}"
        return _SseResponse(events(), {"x-fal-request-id": request_id})


class _SseResponse(Response):
    """A text/event-stream response sent with bare ASGI calls (lighter than StreamingResponse)."""

    def __init__(self, events: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        self._events = events
        self._headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        self._headers += [(k.encode(), v.encode()) for k, v in headers.items()]

    @property
    def headers(self) -> Any:  # reset_after marks this response by header
        return _HeaderSetter(self._headers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        async for chunk in self._events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _HeaderSetter:
    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def __setitem__(self, key: str, value: str) -> None:
        self._raw.append((key.encode(), value.encode()))


_TIMER_MARGIN = 0.0015
"""How long before a deadline `_sleep_until` stops trusting the loop's timers."""


async def _sleep_until(deadline: float) -> None:
    """Return when `time.monotonic()` reaches `deadline`, within ~0.1 ms (on an idle loop).

    Event-loop timers are millisecond-grained: asyncio rounds its epoll timeout up to the next
    millisecond, uvloop counts on a millisecond clock cached per loop turn (so it fires up to
    ~1 ms early or late), and the kernel lets a poll timeout run 0.1% over (0.3 ms on 300 ms).
    A job of T would so end ~1 ms late, and a benchmark would count that server-side
    millisecond as latency its client added. So: loop timers (each shaved by 1% against the
    kernel's slack) until 1.5 ms before the deadline, then yield to the loop (`sleep(0)`, which
    serves the other requests between turns) until the deadline. That last part spins, for at
    most 1.5 ms per deadline.
    """
    while (left := deadline - time.monotonic()) > _TIMER_MARGIN:
        await asyncio.sleep((left - _TIMER_MARGIN) * 0.99)
    while time.monotonic() < deadline:
        await asyncio.sleep(0)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not _has("uvloop"):
        return None
    import uvloop

    return uvloop.new_event_loop


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a clean FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _fal_id(parts: dict[str, str]) -> dict[str, str]:
    return {"x-fal-request-id": parts["request_id"]} if "request_id" in parts else {}


def _http_fault(params: dict[str, Any]) -> Response:
    body = params.get("body", {"detail": "injected error"})
    headers = dict(params.get("headers", {}))
    code = int(params.get("code", 500))
    if isinstance(body, str):
        return Response(body, status_code=code, media_type="text/html", headers=headers)
    return JSONResponse(body, status_code=code, headers=headers)


def _route_of(method: str, path: str) -> tuple[str, dict[str, str]]:
    """Which fal route a request is, and its path parameters."""
    if path.startswith("/run/") and method == "POST":
        endpoint = path[len("/run/") :]
        if endpoint.endswith("/stream"):
            return "stream", {"endpoint": endpoint[: -len("/stream")]}
        return "run", {"endpoint": endpoint}
    if path == "/rest/storage/auth/token" and method == "POST":
        return "token", {}
    if path == "/rest/storage/upload/initiate" and method == "POST":
        return "initiate", {}
    if path == "/cdn/files/upload" and method == "POST":
        return "cdn_upload", {}
    if path.startswith("/cdn/files/") and method == "GET":
        return "cdn_get", {"key": path.rsplit("/", 1)[1]}
    if path.startswith("/gcs/") and method == "PUT":
        return "gcs_put", {"key": path.rsplit("/", 1)[1]}
    if "/requests/" in path:
        app, _, rest = path.strip("/").partition("/requests/")
        pieces = rest.split("/")
        parts = {"app": app, "request_id": pieces[0]}
        tail = "/".join(pieces[1:])
        table = {
            ("GET", ""): "result",
            ("GET", "status"): "status",
            ("GET", "status/stream"): "status_stream",
            ("PUT", "cancel"): "cancel",
        }
        return table.get((method, tail), "unknown"), parts
    if method == "POST" and path.count("/") >= 2:
        return "submit", {"endpoint": path.strip("/")}
    return "unknown", {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job-seconds", type=float, default=0.3)
    parser.add_argument("--no-logs", action="store_true")
    parser.add_argument(
        "--plain", action="store_true", help="asyncio and h11 even when uvloop/httptools exist"
    )
    args = parser.parse_args()
    server = FalTestServer(
        job_seconds=args.job_seconds,
        log_lines=() if args.no_logs else ("generating",),
        record=False,
        fast=not args.plain,
    )
    with server:
        print(f"fal test server on {server.direct_url} (front {server.url})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()

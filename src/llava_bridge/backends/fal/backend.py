"""`FalBackend`: LLaVA on fal's queue, run and stream APIs.

The protocol lives in IO-free flows (queue.py, ops.py, uploads.py) that yield effects,
driven by the sync and async drivers of the transport seam (`_transport/drivers.py`);
this module is the class and its handles.

Hosts. fal has four: queue, run, rest and cdn, each a constructor argument. `base_url=`
(or `LLAVA_FAL_BASE_URL`) points all four at one server, such as `llava-bridge serve`,
with the layout protocol.py describes (run under ``/run``, rest under ``/rest``, cdn
under ``/cdn``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from llava_bridge import retry
from llava_bridge._version import __version__
from llava_bridge.backends._transport.async_pool import AsyncPool
from llava_bridge.backends._transport.bodies import DEFAULT_MAX_RESPONSE_BYTES
from llava_bridge.backends._transport.choice import PROXY_VARIABLES, Transports
from llava_bridge.backends._transport.drivers import iterate_async, iterate_sync, run_async, run_sync
from llava_bridge.backends._transport.effects import Flow
from llava_bridge.backends._transport.flows import Deadline, finite_positive
from llava_bridge.backends._transport.http11 import header_problem
from llava_bridge.backends._transport.httpx_adapter import HttpxAsync, HttpxSync
from llava_bridge.backends._transport.sync_pool import SyncPool
from llava_bridge.backends.base import Closeable
from llava_bridge.backends.fal.credentials import KeyRule, base_url_from_env, shown_origin
from llava_bridge.backends.fal.endpoints import DEFAULT_ENDPOINT, check_endpoint
from llava_bridge.backends.fal.ops import (
    FalContext,
    Prepared,
    TextOnly,
    events_flow,
    finish_flow,
    queue_flow,
    run_flow,
    stream_flow,
    submit_job_flow,
)
from llava_bridge.backends.fal.protocol import (
    CDN_PREFIX,
    DEFAULT_CDN_URL,
    DEFAULT_QUEUE_URL,
    DEFAULT_REST_URL,
    DEFAULT_RUN_URL,
    REST_PREFIX,
    RUN_PREFIX,
)
from llava_bridge.backends.fal.queue import FalStatus, Job, LogLine, cancel_flow, status_flow
from llava_bridge.backends.fal.settings import FalConfig, is_fal_host
from llava_bridge.backends.fal.uploads import StorageState
from llava_bridge.errors import (
    APIStatusError,
    AuthenticationError,
    ConfigurationError,
    MissingCredentialsError,
    PermissionDeniedError,
    ServerUnreachableError,
    replace_advice,
)
from llava_bridge.images import ResizePolicy
from llava_bridge.prompts import CONTEXT_WINDOW, estimate_tokens
from llava_bridge.types import VisionChunk, VisionRequest, VisionResult

__all__ = [
    "DEFAULT_CDN_URL",
    "DEFAULT_ENDPOINT",
    "DEFAULT_QUEUE_URL",
    "DEFAULT_REST_URL",
    "DEFAULT_RUN_URL",
    "INLINE_THRESHOLD",
    "LOCAL_CDN_PREFIX",
    "LOCAL_REST_PREFIX",
    "LOCAL_RUN_PREFIX",
    "POLL_INTERVAL",
    "PROXY_VARIABLES",
    "AsyncFalRequestHandle",
    "FalBackend",
    "FalRequestHandle",
    "FalStatus",
    "LogLine",
]

LOCAL_RUN_PREFIX = RUN_PREFIX
LOCAL_REST_PREFIX = REST_PREFIX
LOCAL_CDN_PREFIX = CDN_PREFIX

POLL_INTERVAL = 0.25
"""Seconds between status polls, when the status stream cannot be used."""
STREAM_IDLE_TIMEOUT = 15.0
"""A status stream silent this long is dropped for polling (fal-js uses 15 s too)."""
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
"""Per-call read limit for submit, status, result and cancel."""
RUN_TIMEOUT = 600.0
"""Per-read limit for sync runs and /stream, which hold the answer back while the model works."""
INLINE_THRESHOLD = 128 * 1024
"""Images (after resizing) of at most this many bytes go inline as a data URI the first time
they are sent; an image sent again, or a larger one, is uploaded once to fal storage and
sent by URL from then on."""

EXPLAINED = (AuthenticationError, PermissionDeniedError, ServerUnreachableError)
"""Errors `_explain` rewords with where the caller named the server and what to pass."""

QueueCallback = Callable[[FalStatus], Any]
T = TypeVar("T")


def _secret(value: str | SecretStr | None) -> SecretStr | None:
    if value is None or isinstance(value, SecretStr):
        return value
    if not isinstance(value, str):
        raise ConfigurationError(f"api_key must be a string, not {type(value).__name__}.")
    if header_problem("Authorization", value) is not None:
        raise ConfigurationError("api_key has a line break or NUL in it; copy the key again without it.")
    return SecretStr(value)


def _named_hosts(*urls: str | None) -> zip[tuple[str, str | None]]:
    """(argument name, URL given) for base_url=, queue_url=, run_url=, rest_url=, cdn_url=."""
    return zip(("base_url", "queue_url", "run_url", "rest_url", "cdn_url"), urls, strict=True)


def _hosts(config: FalConfig) -> tuple[str, str, str, str]:
    return (config.queue_url, config.run_url, config.rest_url, config.cdn_url)


def _unreachable_message(error: ServerUnreachableError, source: str | None) -> str:
    """One line for a server nothing answers at: its origin, where it was named, what to do."""
    where = shown_origin(error.url)
    if source is None:
        return (
            f"Cannot reach fal at {where}: {error.reason}. "
            "Check the network connection (and HTTPS_PROXY, if you need a proxy)."
        )
    fix = source.removesuffix(" in code")
    return (
        f"Cannot reach the server at {where} (from {source}): {error.reason}. "
        f"Is it running? Start one with `llava-bridge serve`, or fix {fix}."
    )


def _check_url(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an http(s) URL such as https://queue.fal.run, not {url!r}.")
    return url.rstrip("/")


class FalBackend(Closeable):
    """LLaVA on fal: the queue protocol (default), or `mode="run"` for one synchronous call.

    `generate` submits the request to fal's queue, follows its status (SSE stream,
    polling as fallback) and fetches the result at once; `stream` reads the
    endpoint's `/stream`. `submit` returns a handle to follow a job yourself, and
    `handle(request_id)` resumes one from another process.

    The key comes from `api_key=`, else `FAL_KEY`, else `FAL_KEY_ID` + `FAL_KEY_SECRET`,
    and is looked up at the first call. Where it goes (credentials.py): a key from the
    environment goes to fal's hosts and to `LLAVA_FAL_BASE_URL` (also from the
    environment), never to a `base_url=` given in code; an `api_key=` goes everywhere.

    `timeout` is a wall clock over a whole call: when it runs out the fal job is
    cancelled (PUT cancel) and `DeadlineExceededError` is raised. `start_timeout`
    is fal's server-side limit on the wait for a runner (`X-Fal-Request-Timeout`).

    Args:
        model: The fal endpoint id, ``owner/alias``; a request's own `model` overrides it.
        api_key: The key, sent to every host configured here. Default: `FAL_KEY` (or
            `FAL_KEY_ID` + `FAL_KEY_SECRET`), sent only to fal's hosts and to `LLAVA_FAL_BASE_URL`.
        base_url: One fal-compatible server for all four hosts (such as `llava-bridge serve`):
            queue at the root, run under ``/run``, rest under ``/rest``, cdn under ``/cdn``.
            Default: `LLAVA_FAL_BASE_URL`, else fal's hosts.
        queue_url: The queue host (submit, status, result, cancel); overrides `base_url`.
        run_url: The run host (`mode="run"` and `stream`); overrides `base_url`.
        rest_url: The storage host (upload tokens, upload initiation); overrides `base_url`.
        cdn_url: The upload host; overrides `base_url`.
        mode: ``"queue"`` (submit, follow, fetch: survives dropped connections) or ``"run"``
            (one synchronous POST per call).
        timeout: Seconds over a whole call, or None for no limit; when it runs out the job is
            cancelled and `DeadlineExceededError` is raised.
        max_retries: Retries after the first attempt of each HTTP call (connection failures,
            429 and 5xx), with jittered backoff; a submit that may have arrived is never re-sent.
        start_timeout: Seconds fal may wait for a runner before it gives up on the job
            (``X-Fal-Request-Timeout``); None: fal's default.
        priority: fal's queue priority, ``"normal"`` or ``"low"`` (``X-Fal-Queue-Priority``).
        webhook_url: An http(s) URL fal posts the result to when the job completes.
        hint: A runner hint for fal's routing (``X-Fal-Runner-Hint``).
        headers: Extra headers sent with every submit, run and stream request.
        poll_interval: Seconds between status polls, when the status stream cannot be used.
        on_queue_update: A function called with each `FalStatus` while a job waits and runs.
        resize: How to shrink images before sending them (the model sees 336 px); None sends
            them as they are.
        inline_threshold: Images (after resizing) of at most this many bytes are sent inline as
            a data URI the first time; others, and repeats, are uploaded once and sent by URL.
        text_only: A request without an image: ``"placeholder"`` sends a small grey image,
            ``"error"`` raises `InvalidRequestError`.
        status_stream: Follow a job over the server-sent status stream (polling when it fails);
            False polls from the start.
        stream_idle_timeout: Seconds a silent status stream is kept before falling back to polling.
        connect_timeout: Seconds to open a connection.
        read_timeout: Seconds to wait for each answer of a submit, status, result or cancel call.
        http_client: An `httpx.Client` for the sync methods, used as given and left open.
            Default: llava-bridge's own connection pool (httpx when a proxy variable is set).
        async_http_client: An `httpx.AsyncClient` for the async methods, used as given and left
            open. Default: an own pool per event loop (httpx when a proxy variable is set).
        max_response_bytes: The largest (decompressed) answer body accepted; a larger one raises
            `ResponseTooLargeError`.
    """

    context_window = CONTEXT_WINDOW
    exact_token_counts = False

    def __init__(
        self,
        model: str = DEFAULT_ENDPOINT,
        *,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        queue_url: str | None = None,
        run_url: str | None = None,
        rest_url: str | None = None,
        cdn_url: str | None = None,
        mode: Literal["queue", "run"] = "queue",
        timeout: float | None = None,
        max_retries: int = retry.MAX_ATTEMPTS - 1,
        start_timeout: float | None = None,
        priority: Literal["normal", "low"] | None = None,
        webhook_url: str | None = None,
        hint: str | None = None,
        headers: Mapping[str, str] | None = None,
        poll_interval: float = POLL_INTERVAL,
        on_queue_update: QueueCallback | None = None,
        resize: ResizePolicy | None = ResizePolicy(),  # noqa: B008 - frozen, shared safely
        inline_threshold: int = INLINE_THRESHOLD,
        text_only: TextOnly = "placeholder",
        status_stream: bool = True,
        stream_idle_timeout: float = STREAM_IDLE_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._model = check_endpoint(model)
        if mode not in ("queue", "run"):
            raise ConfigurationError(f"mode must be 'queue' or 'run', not {mode!r}.")
        if text_only not in ("placeholder", "error"):
            raise ConfigurationError(f"text_only must be 'placeholder' or 'error', not {text_only!r}.")
        if priority not in (None, "normal", "low"):
            raise ConfigurationError(f"priority must be 'normal' or 'low', not {priority!r}.")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be a whole number >= 0, not {max_retries!r}.")
        if (
            isinstance(inline_threshold, bool)
            or not isinstance(inline_threshold, int)
            or inline_threshold < 0
        ):
            raise ConfigurationError(f"inline_threshold must be a byte count >= 0, not {inline_threshold!r}.")
        if on_queue_update is not None and not callable(on_queue_update):
            raise ConfigurationError("on_queue_update must be a function taking a FalStatus.")
        self.mode = mode
        self.timeout = finite_positive("timeout", timeout)
        self.on_queue_update = on_queue_update
        base_from_env = None if base_url else base_url_from_env()
        base = base_url or base_from_env
        if base is not None:
            base = _check_url("LLAVA_FAL_BASE_URL" if base_from_env else "base_url", base)
        self._api_key = _secret(api_key)
        self._base_from_env = base_from_env
        self._named_in_code = next(
            (
                f"{name}="
                for name, url in _named_hosts(base_url, queue_url, run_url, rest_url, cdn_url)
                if url
            ),
            None,
        )
        self._config_template = FalConfig(
            queue_url=_check_url("queue_url", queue_url or base or DEFAULT_QUEUE_URL),
            run_url=_check_url("run_url", run_url or (base + LOCAL_RUN_PREFIX if base else DEFAULT_RUN_URL)),
            rest_url=_check_url(
                "rest_url", rest_url or (base + LOCAL_REST_PREFIX if base else DEFAULT_REST_URL)
            ),
            cdn_url=_check_url("cdn_url", cdn_url or (base + LOCAL_CDN_PREFIX if base else DEFAULT_CDN_URL)),
            user_agent=f"llava-bridge/{__version__}",
            extra_headers=_check_headers(headers),
            start_timeout=finite_positive("start_timeout", start_timeout),
            priority=priority,
            hint=hint,
            webhook_url=_check_url("webhook_url", webhook_url) if webhook_url else None,
            max_attempts=max_retries + 1,
            poll_interval=finite_positive("poll_interval", poll_interval) or POLL_INTERVAL,
            stream_idle_timeout=finite_positive("stream_idle_timeout", stream_idle_timeout)
            or STREAM_IDLE_TIMEOUT,
            connect_timeout=finite_positive("connect_timeout", connect_timeout) or CONNECT_TIMEOUT,
            read_timeout=finite_positive("read_timeout", read_timeout) or READ_TIMEOUT,
            run_timeout=RUN_TIMEOUT,
            use_status_stream=bool(status_stream),
        )
        self._resize = resize
        self._inline_threshold = inline_threshold
        self._text_only: TextOnly = text_only
        self._storage = StorageState()
        self._context: FalContext | None = None
        self._transports = Transports(http_client, async_http_client, max_response_bytes=max_response_bytes)

    # -- what the Backend protocol asks ------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._model

    def count_tokens(self, text: str) -> int:
        """An estimate (fal does not expose the tokenizer); see `exact_token_counts`."""
        return estimate_tokens(text)

    def generate(self, request: VisionRequest) -> VisionResult:
        """Answer through the queue (or one sync call in `mode="run"`), blocking."""
        flow = (run_flow if self.mode == "run" else queue_flow)(self._ctx(), request, self.timeout)
        return self._run(flow, self.on_queue_update)

    async def agenerate(self, request: VisionRequest) -> VisionResult:
        """Async `generate`."""
        flow = (run_flow if self.mode == "run" else queue_flow)(self._ctx(), request, self.timeout)
        return await self._arun(flow, self.on_queue_update)

    def stream(self, request: VisionRequest) -> Iterator[VisionChunk]:
        """Yield the new text of each `/stream` event; the last chunk carries the result."""
        flow = stream_flow(self._ctx(), request, self.timeout)
        yield from self._iterate(flow)

    async def astream(self, request: VisionRequest) -> AsyncIterator[VisionChunk]:
        """Async `stream`."""
        flow = stream_flow(self._ctx(), request, self.timeout)
        async for chunk in self._aiterate(flow):
            yield chunk

    # -- the queue, by hand --------------------------------------------------------------

    def submit(self, request: VisionRequest) -> FalRequestHandle:
        """Queue the request and return a handle to follow, fetch or cancel it."""
        ctx = self._ctx()
        job, prepared = self._run(submit_job_flow(ctx, Deadline.after(self.timeout), request))
        return FalRequestHandle(self, job, prepared)

    async def asubmit(self, request: VisionRequest) -> AsyncFalRequestHandle:
        """Async `submit`."""
        ctx = self._ctx()
        flow = submit_job_flow(ctx, Deadline.after(self.timeout), request)
        job, prepared = await self._arun(flow)
        return AsyncFalRequestHandle(self, job, prepared)

    def handle(self, request_id: str, *, model: str | None = None) -> FalRequestHandle:
        """A handle on a job submitted earlier (by this or another process)."""
        endpoint = check_endpoint(model) if model else self._model
        return FalRequestHandle(self, Job.resume(request_id, endpoint, self._config_template.queue_url), None)

    def ahandle(self, request_id: str, *, model: str | None = None) -> AsyncFalRequestHandle:
        """An async handle on a job submitted earlier."""
        endpoint = check_endpoint(model) if model else self._model
        return AsyncFalRequestHandle(
            self, Job.resume(request_id, endpoint, self._config_template.queue_url), None
        )

    # -- plumbing --------------------------------------------------------------------------

    @property
    def uploads(self) -> int:
        """How many images this backend has uploaded to fal storage."""
        return self._storage.uploads

    def _ctx(self) -> FalContext:
        """The flows' context; resolves the key on first use (raising when it is missing)."""
        if self._context is not None:
            return self._context
        template = self._config_template
        keys = KeyRule.resolve(
            self._api_key, base_from_env=self._base_from_env, named_in_code=self._named_in_code
        )
        if keys.key is None and any(is_fal_host(url) for url in _hosts(template)):
            raise MissingCredentialsError()
        config = dataclasses.replace(template, keys=keys)
        self._context = FalContext(
            config=config,
            storage=self._storage,
            model=self._model,
            resize=self._resize,
            inline_threshold=self._inline_threshold,
            text_only=self._text_only,
        )
        return self._context

    def _run(self, flow: Flow[T], on_emit: QueueCallback | None = None) -> T:
        try:
            return run_sync(flow, self._transport(), on_emit)
        except EXPLAINED as exc:
            self._explain(exc)
            raise exc from None  # the chain would only repeat the message

    def _iterate(self, flow: Flow[Any]) -> Iterator[Any]:
        try:
            yield from iterate_sync(flow, self._transport())
        except EXPLAINED as exc:
            self._explain(exc)
            raise exc from None  # the chain would only repeat the message

    async def _arun(self, flow: Flow[T], on_emit: QueueCallback | None = None) -> T:
        try:
            return await run_async(flow, self._async_transport(), on_emit)
        except EXPLAINED as exc:
            self._explain(exc)
            raise exc from None  # the chain would only repeat the message

    async def _aiterate(self, flow: Flow[Any]) -> AsyncIterator[Any]:
        try:
            async for value in iterate_async(flow, self._async_transport()):
                yield value
        except EXPLAINED as exc:
            self._explain(exc)
            raise exc from None  # the chain would only repeat the message

    def _explain(self, error: APIStatusError | ServerUnreachableError) -> None:
        """Say in the error where the caller named the server, and what to do: for a 401/403
        from a server of the caller's, which key rule applied (never the key); for a server
        that cannot be reached, whether it came from LLAVA_FAL_BASE_URL or base_url=."""
        context = self._context
        if context is None or context.config.keys is None:
            return
        keys = context.config.keys
        if isinstance(error, ServerUnreachableError):
            error.args = (_unreachable_message(error, keys.source_of(error.url)),)
            return
        own = [url for url in _hosts(context.config) if not is_fal_host(url)]
        advice = keys.refusal_advice(own[0]) if own else None
        if advice is not None:
            error.args = (replace_advice(str(error), advice),)

    def _transport(self) -> SyncPool | HttpxSync:
        return self._transports.sync()

    def _async_transport(self) -> AsyncPool | HttpxAsync:
        return self._transports.for_running_loop()

    def close(self) -> None:
        """Close the connections this backend opened (an injected client is left open)."""
        self._transports.close()

    async def aclose(self) -> None:
        """Close this backend's connections for the running event loop, and the sync ones."""
        await self._transports.aclose()

    def __repr__(self) -> str:
        queue_url = self._config_template.queue_url
        return f"FalBackend(model={self._model!r}, mode={self.mode!r}, queue_url={queue_url!r})"


def _check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigurationError("headers must be a mapping of header names to string values.")
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem is not None:
            raise ConfigurationError(f"headers=: {problem}.")
    return dict(headers)


class _Handle:
    """What both handles share: the job, and the IO-free flows their methods drive."""

    def __init__(self, backend: FalBackend, job: Job, prepared: Prepared | None) -> None:
        self._backend = backend
        self._job = job
        self._prepared = prepared

    @property
    def request_id(self) -> str:
        return self._job.request_id

    @property
    def model(self) -> str:
        return self._job.endpoint

    def _status_flow(self) -> Flow[FalStatus]:
        return status_flow(self._backend._ctx().config, Deadline(), self._job)

    def _events_flow(self) -> Flow[FalStatus]:
        return events_flow(self._backend._ctx(), self._job)

    def _result_flow(self, timeout: float | None) -> Flow[VisionResult]:
        deadline = Deadline.after(finite_positive("timeout", timeout) or self._backend.timeout)
        return finish_flow(self._backend._ctx(), deadline, self._job, self._prepared)

    def _cancel_flow(self) -> Flow[str]:
        return cancel_flow(self._backend._ctx().config, Deadline(), self._job)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(request_id={self.request_id!r}, model={self.model!r})"


class FalRequestHandle(_Handle):
    """A queued fal job: follow it, fetch its result, or cancel it."""

    def status(self) -> FalStatus:
        """One status poll; `logs` holds every line so far."""
        return self._backend._run(self._status_flow())

    def iter_events(self) -> Iterator[FalStatus]:
        """Status updates until the job completes (the last one is COMPLETED); logs are new lines only."""
        yield from self._backend._iterate(self._events_flow())

    def result(self, *, timeout: float | None = None) -> VisionResult:
        """Wait for the job and fetch its result; `timeout` (default: the backend's) cancels it on expiry."""
        return self._backend._run(self._result_flow(timeout), self._backend.on_queue_update)

    def cancel(self) -> str:
        """Ask fal to cancel; returns its answer (``CANCELLATION_REQUESTED``, ``ALREADY_COMPLETED``...)."""
        return self._backend._run(self._cancel_flow())


class AsyncFalRequestHandle(_Handle):
    """Async twin of `FalRequestHandle`."""

    async def status(self) -> FalStatus:
        """One status poll; `logs` holds every line so far."""
        return await self._backend._arun(self._status_flow())

    async def iter_events(self) -> AsyncIterator[FalStatus]:
        """Status updates until the job completes (the last one is COMPLETED); logs are new lines only."""
        async for status in self._backend._aiterate(self._events_flow()):
            yield status

    async def result(self, *, timeout: float | None = None) -> VisionResult:
        """Wait for the job and fetch its result; `timeout` (default: the backend's) cancels it on expiry."""
        return await self._backend._arun(self._result_flow(timeout), self._backend.on_queue_update)

    async def cancel(self) -> str:
        """Ask fal to cancel; returns its answer (``CANCELLATION_REQUESTED``, ``ALREADY_COMPLETED``...)."""
        return await self._backend._arun(self._cancel_flow())

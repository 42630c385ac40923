"""fal's queue protocol as IO-free flows: submit, status, wait, result, cancel.

Waiting uses the SSE status stream (``.../status/stream?logs=1``, logs as deltas)
and falls back to polling (``.../status?logs=1``, logs cumulative) when the stream
is unavailable, breaks, stalls for `stream_idle_timeout`, or when less than that
is left before the caller's deadline. Either way each log line is handed out
exactly once, in a `FalStatus` update emitted when something changed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from llava_bridge.backends._transport.bodies import loads
from llava_bridge.backends._transport.effects import (
    CloseStream,
    Effect,
    Emit,
    HttpRequest,
    HttpResponse,
    NextEvent,
    OpenStream,
    Sleep,
    SseEvent,
    TransportFailure,
)
from llava_bridge.backends._transport.flows import (
    Deadline,
    DeadlineHit,
    call,
    raise_for_status,
    unexpected_answer,
)
from llava_bridge.backends.fal.endpoints import app_path
from llava_bridge.backends.fal.protocol import (
    ALREADY_COMPLETED,
    COMPLETED,
    NOT_FOUND,
    PROPOSED_ID_HEADER,
    REQUEST_ID_HEADER,
    cancel_path,
    request_id_problem,
    response_path,
    status_path,
    status_stream_path,
)
from llava_bridge.backends.fal.settings import FalConfig, request_name, server_name
from llava_bridge.errors import InvalidRequestError, JobFailedError
from llava_bridge.retry import Phase, should_retry_status

__all__ = [
    "propose_request_id",
    "CANCEL_TIMEOUT",
    "FalStatus",
    "Job",
    "LogLine",
    "LogTracker",
    "cancel_flow",
    "cancel_quietly",
    "check_completed",
    "result_flow",
    "status_flow",
    "submit_flow",
    "wait_flow",
]

logger = logging.getLogger("llava_bridge.fal")

CANCEL_TIMEOUT = 5.0
"""Seconds the cancel sent after a timeout= or an interruption may take."""


@dataclass(frozen=True)
class LogLine:
    """One log line of a fal job."""

    message: str
    level: str | None = None
    timestamp: str | None = None
    source: str | None = None

    @classmethod
    def from_json(cls, raw: Any) -> LogLine:
        if not isinstance(raw, Mapping):
            return cls(message=str(raw))
        return cls(
            message=str(raw.get("message", "")),
            level=_str_or_none(raw.get("level")),
            timestamp=_str_or_none(raw.get("timestamp")),
            source=_str_or_none(raw.get("source")),
        )


@dataclass(frozen=True)
class FalStatus:
    """Where a fal job stands.

    In `on_queue_update` callbacks and `iter_events()`, `logs` holds only the lines
    new since the previous update; from `handle.status()` it holds all of them.
    """

    request_id: str
    status: str
    """``IN_QUEUE``, ``IN_PROGRESS`` or ``COMPLETED``."""
    queue_position: int | None = None
    logs: tuple[LogLine, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED


@dataclass(frozen=True)
class Job:
    """A submitted request and its URLs (built from our own queue URL, never the server's)."""

    request_id: str
    endpoint: str
    queue_url: str

    @classmethod
    def resume(cls, request_id: str, endpoint: str, queue_url: str) -> Job:
        if not isinstance(request_id, str) or request_id_problem(request_id) is not None:
            raise InvalidRequestError(
                f"{request_id!r} is not a fal request id (letters, digits, '-', '_' and '.')."
            )
        return cls(request_id, endpoint, queue_url)

    @property
    def response_url(self) -> str:
        return self.queue_url + response_path(app_path(self.endpoint), self.request_id)

    @property
    def status_url(self) -> str:
        return self.queue_url + status_path(app_path(self.endpoint), self.request_id)

    @property
    def stream_url(self) -> str:
        return self.queue_url + status_stream_path(app_path(self.endpoint), self.request_id)

    @property
    def cancel_url(self) -> str:
        return self.queue_url + cancel_path(app_path(self.endpoint), self.request_id)


class LogTracker:
    """All log lines seen so far; turns deltas or cumulative lists into new lines only."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []

    def add_delta(self, lines: tuple[LogLine, ...]) -> tuple[LogLine, ...]:
        self.lines.extend(lines)
        return lines

    def add_cumulative(self, lines: tuple[LogLine, ...]) -> tuple[LogLine, ...]:
        new = lines[len(self.lines) :]
        self.lines.extend(new)
        return new


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_status(request_id: str, data: Any, response: HttpResponse) -> FalStatus:
    """A `FalStatus` from a status JSON body."""
    if not isinstance(data, Mapping) or not isinstance(data.get("status"), str):
        raise unexpected_answer(response, f"The status of request {request_id} had no 'status'")
    position = data.get("queue_position")
    metrics = data.get("metrics")
    logs = data.get("logs")
    return FalStatus(
        request_id=request_id,
        status=data["status"],
        queue_position=position if isinstance(position, int) and not isinstance(position, bool) else None,
        logs=tuple(LogLine.from_json(line) for line in logs) if isinstance(logs, list) else (),
        metrics={
            k: float(v)
            for k, v in (metrics.items() if isinstance(metrics, Mapping) else ())
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        },
        error=None if data.get("error") is None else str(data["error"]),
        error_type=_str_or_none(data.get("error_type")),
    )


def check_completed(status: FalStatus, queue_url: str | None = None) -> None:
    """Raise JobFailedError when a COMPLETED status carries an error (naming fal only for fal's hosts)."""
    if status.error is not None or status.error_type is not None:
        kind = f" ({status.error_type})" if status.error_type else ""
        server = "fal" if queue_url is None else server_name(queue_url)
        raise JobFailedError(
            f"Request {status.request_id} to {server} failed{kind}: {status.error or 'no detail given'}",
            request_id=status.request_id,
            error_type=status.error_type,
        )


def propose_request_id(config: FalConfig) -> str:
    """A fresh request id to propose on submit (see PROPOSED_ID_HEADER)."""
    return str(uuid.UUID(int=config.rng.getrandbits(128), version=4))


def submit_flow(
    config: FalConfig,
    deadline: Deadline,
    endpoint: str,
    arguments: Mapping[str, Any],
    proposed: str | None = None,
) -> Generator[Effect, Any, Job]:
    """Queue the job; never re-sent after an ambiguous failure."""
    url = f"{config.queue_url}/{endpoint}"
    proposed = proposed or propose_request_id(config)
    idempotent = config.queue_url in config.idempotent_hosts
    request = HttpRequest(
        "POST",
        url,
        headers={**config.job_headers(url), PROPOSED_ID_HEADER: proposed},
        params={"fal_webhook": config.webhook_url} if config.webhook_url else {},
        json_body=dict(arguments),
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        label="submit",
        # A server known to honour proposed ids dedups a re-sent submit: safe to retry as a read.
        phase=Phase.READ if idempotent else Phase.SUBMIT,
    )
    response, data = yield from call(config, deadline, request)
    raise_for_status(response, endpoint=endpoint)
    request_id = data.get("request_id") if isinstance(data, Mapping) else None
    if not isinstance(request_id, str) or request_id_problem(request_id) is not None:
        raise unexpected_answer(response, "The submit answer had no usable 'request_id'")
    if request_id == proposed:
        config.idempotent_hosts.add(config.queue_url)
    return Job(request_id, endpoint, config.queue_url)


def _get(config: FalConfig, url: str, label: str, **params: str) -> HttpRequest:
    return HttpRequest(
        "GET",
        url,
        headers=config.headers(url),
        params=params,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        label=label,
    )


def status_flow(config: FalConfig, deadline: Deadline, job: Job) -> Generator[Effect, Any, FalStatus]:
    """One status poll, with all log lines so far."""
    response, data = yield from call(config, deadline, _get(config, job.status_url, "status", logs="1"))
    raise_for_status(response, request_id=job.request_id)
    return parse_status(job.request_id, data, response)


def _stream_allowed(config: FalConfig, deadline: Deadline) -> bool:
    """The stream may stall for `stream_idle_timeout`; use it only when that fits the deadline."""
    left = deadline.remaining()
    return config.use_status_stream and (left is None or left > config.stream_idle_timeout)


def wait_flow(
    config: FalConfig, deadline: Deadline, job: Job, tracker: LogTracker
) -> Generator[Effect, Any, FalStatus]:
    """Wait until the job completes, emitting a `FalStatus` whenever something changed.

    Returns the COMPLETED status with every log line (it may carry an error).
    """
    last: list[tuple[str, int | None]] = []
    if _stream_allowed(config, deadline):
        done = yield from _watch_stream(config, deadline, job, tracker, last)
        if done is not None:
            return done
    first = True
    while True:
        if not first:
            yield Sleep(deadline.bound(config.poll_interval) or 0.0)
        first = False
        status = yield from status_flow(config, deadline, job)
        new = tracker.add_cumulative(status.logs)
        yield from _emit_if_changed(replace(status, logs=new), last)
        if status.completed:
            return _with_all_lines(status, tracker)


def _with_all_lines(status: FalStatus, tracker: LogTracker) -> FalStatus:
    """`status` carrying every log line of the job (the same object when it already does)."""
    if len(tracker.lines) == len(status.logs):
        return status
    return replace(status, logs=tuple(tracker.lines))


def _emit_if_changed(status: FalStatus, last: list[tuple[str, int | None]]) -> Generator[Effect, Any, None]:
    key = (status.status, status.queue_position)
    if status.logs or not last or last[0] != key:
        last[:] = [key]
        yield Emit(status)


def _watch_stream(
    config: FalConfig,
    deadline: Deadline,
    job: Job,
    tracker: LogTracker,
    last: list[tuple[str, int | None]],
) -> Generator[Effect, Any, FalStatus | None]:
    """Follow the SSE status stream; None when it could not be used to the end."""
    request = replace(
        _get(config, job.stream_url, "status stream", logs="1"),
        headers={**config.headers(job.stream_url), "Accept": "text/event-stream"},
        read_timeout=config.stream_idle_timeout,
        connect_timeout=deadline.bound(config.connect_timeout),
    )
    reply = yield OpenStream(request)
    if isinstance(reply, TransportFailure) or not reply.ok:
        if deadline.expired():
            raise DeadlineHit
        shown = reply.message if isinstance(reply, TransportFailure) else f"HTTP {reply.status_code}"
        logger.debug("fal status stream unavailable (%s); polling", shown)
        return None
    while True:
        event = yield NextEvent()
        if not isinstance(event, SseEvent):
            if deadline.expired():
                raise DeadlineHit
            shown = event.message if isinstance(event, TransportFailure) else "it ended"
            logger.debug("fal status stream stopped before COMPLETED (%s); polling", shown)
            return None
        try:
            data = loads(event.data)  # too deep: BadBody, a ValueError
        except ValueError:
            logger.debug("fal status stream sent invalid JSON; polling")
            yield CloseStream()
            return None
        if not isinstance(data, Mapping) or "status" not in data:
            continue  # a keep-alive or an event we do not know
        status = parse_status(job.request_id, data, reply)
        tracker.add_delta(status.logs)  # the stream sends only new lines
        yield from _emit_if_changed(status, last)
        if status.completed:  # the stream is left open: the result is fetched first, then it closes
            return _with_all_lines(status, tracker)
        if not _stream_allowed(config, deadline):
            yield CloseStream()
            return None


def _result_rule(response: HttpResponse, phase: Phase) -> bool:
    """Fetching a result is a read, but a 500 that fal sent is the job's own answer (the
    app failed); 502/503/504 (runner and gateway trouble) are retried like any read."""
    if response.status_code == 500 and REQUEST_ID_HEADER.lower() in response.headers:
        return False
    return should_retry_status(response.status_code, response.headers, Phase.READ)


def result_flow(config: FalConfig, deadline: Deadline, job: Job) -> Generator[Effect, Any, Any]:
    """The job's output JSON; the model's own error status raises its typed error."""
    request = _get(config, job.response_url, "result")
    response, data = yield from call(config, deadline, request, retry_status=_result_rule)
    raise_for_status(response, request_id=job.request_id)
    return data


def cancel_flow(config: FalConfig, deadline: Deadline, job: Job) -> Generator[Effect, Any, str]:
    """Ask fal to cancel; returns its answer (``CANCELLATION_REQUESTED``, ``ALREADY_COMPLETED``...)."""
    request = HttpRequest(
        "PUT",
        job.cancel_url,
        headers=config.headers(job.cancel_url),
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        label="cancel",
    )
    response, _ = yield from call(config, deadline, request, expect_json=False)
    body = response.json_or_text()
    answer = body.get("status") if isinstance(body, Mapping) else None
    if isinstance(answer, str) and answer in (ALREADY_COMPLETED, NOT_FOUND):
        return answer
    raise_for_status(response, request_id=job.request_id)
    return answer if isinstance(answer, str) else "OK"


def cancel_quietly(config: FalConfig, job: Job) -> Generator[Effect, Any, None]:
    """Cancel after the caller's deadline or interruption: bounded by CANCEL_TIMEOUT, errors only logged."""
    try:
        answer = yield from cancel_flow(config, Deadline.after(CANCEL_TIMEOUT), job)
        logger.info("%s cancelled: %s", request_name(job.queue_url, job.request_id), answer)
    except Exception as exc:  # the deadline error matters more than a failed cancel
        logger.warning("%s: the cancel failed: %s", request_name(job.queue_url, job.request_id), exc)

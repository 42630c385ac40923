"""fal's queue API: submit, status, status stream, result, cancel."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from llava_bridge.backends.fal.protocol import (
    ALREADY_COMPLETED,
    APP_TEMPLATE,
    COMPLETED,
    ERROR_TYPE_HEADER,
    IN_QUEUE,
    NOT_FOUND,
    REQUEST_ID_HEADER,
    CancelOutcome,
    cancel_path,
    request_id_problem,
    response_path,
    status_path,
    status_stream_path,
)
from llava_bridge.errors import LlavaError
from llava_bridge.server.context import Context, ServerContext, base_url
from llava_bridge.server.http.sse import sse_event
from llava_bridge.server.inputs import LlavaInput, error_answer, to_vision_request
from llava_bridge.server.jobs.protocol import Job, LogEntry

__all__ = ["router"]

router = APIRouter(tags=["queue"])

STREAM_HEARTBEAT_S = 5.0
"""A status stream repeats its last event after this long without a change."""
QUEUE_REFRESH_S = 0.5
"""A queued job's stream re-reads its position at most this often (the queue moves with every claim)."""

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown endpoint or request id."}}


class SubmitAnswer(BaseModel):
    request_id: str
    response_url: str
    status_url: str
    cancel_url: str
    status: str
    queue_position: int


class StatusAnswer(BaseModel):
    status: str
    request_id: str
    response_url: str
    status_url: str
    cancel_url: str
    logs: list[dict[str, str]] | None = None
    queue_position: int | None = None
    metrics: dict[str, float] | None = None
    error: str | None = None
    error_type: str | None = None


class CancelAnswer(BaseModel):
    status: str


def _urls(request: Request, app: str, job_id: str) -> dict[str, str]:
    base = base_url(request)
    return {
        "response_url": base + response_path(app, job_id),
        "status_url": base + status_path(app, job_id),
        "cancel_url": base + cancel_path(app, job_id),
    }


def _start_deadline(header: str | None, now: float) -> float | None:
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise HTTPException(
            400, detail="X-Fal-Request-Timeout must be a positive number of seconds.", headers=_bad_request
        )
    return now + seconds


_bad_request = {ERROR_TYPE_HEADER: "bad_request"}
_SSE_HEADERS = {"Cache-Control": "no-cache"}


@router.post(
    "/" + APP_TEMPLATE,
    response_model=SubmitAnswer,
    responses={**_NOT_FOUND, 422: {"description": "Invalid input, refused before queueing."}},
    summary="Queue a request",
)
async def submit(
    owner: str,
    alias: str,
    arguments: LlavaInput,
    request: Request,
    context: Context,
    fal_webhook: Annotated[str | None, Query(description="Not supported here; answered with 400.")] = None,
    x_fal_request_timeout: Annotated[
        str | None, Header(description="Seconds the request may wait to start.")
    ] = None,
    x_llava_request_id: Annotated[
        str | None,
        Header(
            description="A UUID the client proposes as the request id. Submitting again with the same id "
            "returns the job the first submit made instead of queueing another (idempotent), so a client "
            "whose connection broke after sending can find out whether its job was queued."
        ),
    ] = None,
) -> JSONResponse:
    app = context.app_id(owner, alias)
    if fal_webhook is not None:
        raise HTTPException(
            400, detail="Webhooks (fal_webhook) are not supported by llava-bridge serve; poll status."
        )
    now = time.time()
    deadline = _start_deadline(x_fal_request_timeout, now)
    file_id = context.resolver.stored_file_id(arguments.image_url, base_url(request))
    try:
        to_vision_request(arguments, None)
        await context.resolver.check(arguments.image_url, file_id)
    except LlavaError as exc:
        status, body = error_answer(exc)
        return JSONResponse(body, status_code=status)
    job_id = _proposed_id(x_llava_request_id) or str(uuid.uuid4())
    payload = arguments.model_dump(exclude_none=True)
    created, job, position = await context.store.submit(
        job_id=job_id,
        app=app,
        endpoint=app,
        arguments=payload,
        image_file=file_id,
        now=now,
        start_deadline=deadline,
    )
    if not created and (job.app != app or job.input != payload):
        raise HTTPException(
            409,
            detail=f"Request id {job_id!r} was already used for a different request; propose a new id.",
        )
    if created:
        context.runner.wake()
    body = {
        "request_id": job_id,
        **_urls(request, app, job_id),
        "status": job.state,
        "queue_position": position,
    }
    return JSONResponse(body, headers={REQUEST_ID_HEADER: job_id})


def _proposed_id(header: str | None) -> str | None:
    """The client's proposed request id, if it is a UUID (anything else is refused)."""
    if header is None:
        return None
    try:
        return str(uuid.UUID(header.strip()))
    except ValueError:
        raise HTTPException(
            400, detail="X-Llava-Request-Id must be a UUID, e.g. str(uuid.uuid4()).", headers=_bad_request
        ) from None


def _check_id(job_id: str) -> None:
    problem = request_id_problem(job_id)
    if problem is not None:
        raise HTTPException(400, detail=f"{job_id!r} is not a request id: {problem}.", headers=_bad_request)


async def _job(context: ServerContext, app: str, job_id: str) -> Job:
    _check_id(job_id)
    job = await context.store.get(job_id)
    if job is None or job.app != app:
        raise HTTPException(404, detail=f"Request {job_id!r} not found (unknown, or its result has expired).")
    return job


async def _status_body(
    context: ServerContext, request: Request, job: Job, logs: list[LogEntry] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": job.state,
        "request_id": job.id,
        **_urls(request, job.app, job.id),
        "logs": None if logs is None else [entry.to_json() for entry in logs],
    }
    if job.state == IN_QUEUE:
        body["queue_position"] = await context.store.queue_position(job)
    if job.state == COMPLETED:
        body["metrics"] = {} if job.inference_time is None else {"inference_time": job.inference_time}
        body["error"] = job.error
        body["error_type"] = job.error_type
    return body


@router.get(
    status_path(APP_TEMPLATE, "{request_id}"),
    response_model=StatusAnswer,
    responses={**_NOT_FOUND, 202: {"description": "Queued or running.", "model": StatusAnswer}},
    summary="Request status (200 when completed, 202 before)",
)
async def status(
    owner: str,
    alias: str,
    request_id: str,
    request: Request,
    context: Context,
    logs: Annotated[bool, Query(description="Include the cumulative log lines.")] = False,
) -> JSONResponse:
    app = context.app_id(owner, alias)
    job = await _job(context, app, request_id)
    entries = await context.store.logs(job.id) if logs else None
    body = await _status_body(context, request, job, entries)
    code = 200 if job.state == COMPLETED else 202
    return JSONResponse(body, status_code=code, headers={REQUEST_ID_HEADER: job.id})


@router.get(
    status_stream_path(APP_TEMPLATE, "{request_id}"),
    responses={**_NOT_FOUND, 200: {"content": {"text/event-stream": {}}, "description": "Status events."}},
    summary="Status as server-sent events until COMPLETED (logs are new lines only)",
)
async def status_stream(
    owner: str,
    alias: str,
    request_id: str,
    request: Request,
    context: Context,
    logs: Annotated[bool, Query(description="Include new log lines in each event.")] = False,
) -> Response:
    app = context.app_id(owner, alias)
    changes = context.runner.changes
    watch = changes.watch(request_id, logs=logs)  # before the first read: later changes wake it
    try:
        first: Job | None = await _job(context, app, request_id)
    except BaseException:
        changes.forget(watch)
        raise
    if first is not None and first.state == COMPLETED:  # one event: no stream machinery needed
        changes.forget(watch)
        entries = await context.store.logs(request_id) if logs else None
        body = await _status_body(context, request, first, entries)
        return Response(sse_event(body), media_type="text/event-stream", headers=_SSE_HEADERS)

    async def events() -> AsyncIterator[str]:
        nonlocal first
        last_log = 0
        last_sent: dict[str, Any] | None = None
        last_time = 0.0
        try:
            while True:
                job, first = first or await context.store.get(request_id), None
                if job is None:
                    yield sse_event({"detail": "The request's result has expired."}, event="error")
                    return
                entries = await context.store.logs(request_id, after=last_log) if logs else None
                if entries:
                    last_log = entries[-1].seq
                body = await _status_body(context, request, job, entries)
                bare = {key: value for key, value in body.items() if key != "logs"}
                read_at = time.monotonic()
                if entries or bare != last_sent or read_at - last_time >= STREAM_HEARTBEAT_S:
                    yield sse_event(body)
                    last_sent, last_time = bare, read_at
                if job.state == COMPLETED:
                    return
                if job.state == IN_QUEUE:
                    changes.watch_queue(watch)
                woke = await watch.wait(last_time + STREAM_HEARTBEAT_S - time.monotonic())
                if woke == "queue":  # only positions moved: coalesce a burst of claims into one read
                    await watch.wait(read_at + QUEUE_REFRESH_S - time.monotonic())
        finally:
            changes.forget(watch)  # a stream that never started is dropped when its job completes

    return StreamingResponse(events(), media_type="text/event-stream", headers=_SSE_HEADERS)


@router.get(
    response_path(APP_TEMPLATE, "{request_id}"),
    responses={
        **_NOT_FOUND,
        200: {"description": "The model's output: {output, partial, finish_reason, usage}."},
        400: {"description": "The request has not completed yet."},
        422: {"description": "The model refused the input (same body the model gave)."},
    },
    summary="The result, or the model's error with its status code",
)
async def result(owner: str, alias: str, request_id: str, context: Context) -> JSONResponse:
    app = context.app_id(owner, alias)
    job = await _job(context, app, request_id)
    if job.state != COMPLETED or job.result_status is None:
        raise HTTPException(400, detail="Request is still in progress; poll its status_url until COMPLETED.")
    headers = {REQUEST_ID_HEADER: job.id}
    if job.error_type:
        headers[ERROR_TYPE_HEADER] = job.error_type
    return JSONResponse(job.result_body, status_code=job.result_status, headers=headers)


_CANCEL_CODES: dict[CancelOutcome, int] = {
    "OK": 200,
    "CANCELLATION_REQUESTED": 202,
    "ALREADY_COMPLETED": 400,
    "NOT_FOUND": 404,
}


@router.put(
    cancel_path(APP_TEMPLATE, "{request_id}"),
    response_model=CancelAnswer,
    responses={
        202: {"description": "CANCELLATION_REQUESTED: the running job was signalled.", "model": CancelAnswer},
        400: {"description": "ALREADY_COMPLETED."},
        404: {"description": "NOT_FOUND."},
    },
    summary="Cancel: OK (removed from the queue), CANCELLATION_REQUESTED, ALREADY_COMPLETED or NOT_FOUND",
)
async def cancel(owner: str, alias: str, request_id: str, context: Context) -> JSONResponse:
    app = context.app_id(owner, alias)
    _check_id(request_id)
    job = await context.store.get(request_id)
    outcome: CancelOutcome = NOT_FOUND
    if job is not None and job.app == app:
        outcome = await context.runner.cancel(request_id)
    body: dict[str, Any] = {"status": outcome}
    if outcome in (ALREADY_COMPLETED, NOT_FOUND):
        body["detail"] = (
            "The request has already completed." if outcome == ALREADY_COMPLETED else "No such request."
        )
    return JSONResponse(body, status_code=_CANCEL_CODES[outcome])

"""What `FalBackend` does, as IO-free flows: prepare, queue, run, stream.

Each flow is driven by the transport's sync or async driver (`_transport/drivers.py`);
the backend class only picks the flow and the driver.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from llava_bridge.backends._transport.bodies import loads
from llava_bridge.backends._transport.effects import (
    CloseStream,
    Effect,
    Emit,
    HttpRequest,
    NextEvent,
    SseEvent,
    TransportFailure,
)
from llava_bridge.backends._transport.flows import (
    Abandoned,
    Deadline,
    DeadlineHit,
    call,
    open_stream,
    raise_for_status,
)
from llava_bridge.backends.fal.endpoints import (
    EndpointProfile,
    build_arguments,
    build_result,
    check_endpoint,
    profile_for,
    read_output,
)
from llava_bridge.backends.fal.protocol import REQUEST_ID_HEADER, STREAM_SUFFIX
from llava_bridge.backends.fal.queue import (
    FalStatus,
    Job,
    LogTracker,
    cancel_quietly,
    check_completed,
    propose_request_id,
    result_flow,
    submit_flow,
    wait_flow,
)
from llava_bridge.backends.fal.settings import FalConfig, is_fal_host, request_name, server_name
from llava_bridge.backends.fal.uploads import StorageState, image_url_flow, placeholder_image
from llava_bridge.errors import APIConnectionError, DeadlineExceededError, InvalidRequestError, JobFailedError
from llava_bridge.images import ResizePolicy
from llava_bridge.prompts import CONTEXT_WINDOW, fit_to_context, render_single_prompt
from llava_bridge.retry import Phase
from llava_bridge.stops import LLAMA3_STOP_STRINGS, StopScanner
from llava_bridge.types import VisionChunk, VisionRequest, VisionResult

__all__ = [
    "FalContext",
    "Prepared",
    "events_flow",
    "finish_flow",
    "queue_flow",
    "run_flow",
    "stream_flow",
    "submit_job_flow",
]

TextOnly = Literal["placeholder", "error"]


@dataclass(frozen=True)
class FalContext:
    """A backend's settings and shared state, as the flows see them."""

    config: FalConfig
    storage: StorageState
    model: str
    resize: ResizePolicy | None
    inline_threshold: int
    text_only: TextOnly


@dataclass(frozen=True)
class Prepared:
    """A request ready to send: the endpoint, its input, and what shapes the result."""

    endpoint: str
    profile: EndpointProfile
    arguments: Mapping[str, Any]
    stop: tuple[str, ...]
    max_new_tokens: int
    prompt_tokens: int
    dropped_turns: int = 0

    def result(
        self,
        raw: str,
        request_id: str | None,
        metrics: Mapping[str, float] | None = None,
        logs: tuple[str, ...] = (),
    ) -> VisionResult:
        result = build_result(
            raw,
            stop=self.stop,
            max_new_tokens=self.max_new_tokens,
            prompt_tokens=self.prompt_tokens,
            model=self.endpoint,
            request_id=request_id,
            metrics=metrics,
            logs=logs,
        )
        if not self.dropped_turns:
            return result
        usage = result.usage.model_copy(update={"dropped_turns": self.dropped_turns})
        return result.model_copy(update={"usage": usage})


def prepare_flow(
    ctx: FalContext, deadline: Deadline, request: VisionRequest
) -> Generator[Effect, Any, Prepared]:
    """Fit the conversation, render the one prompt, and get the image to an URL."""
    endpoint = check_endpoint(request.model or ctx.model)
    if request.image is None:
        if ctx.text_only == "error":
            raise InvalidRequestError(
                "The fal endpoint needs an image and this request has none. Pass an image, or use "
                "FalBackend(text_only='placeholder') to send a small neutral grey image instead."
            )
        request = request.model_copy(update={"image": placeholder_image()})
    fitted, budget = fit_to_context(request, context_window=CONTEXT_WINDOW)
    image = fitted.image or placeholder_image()  # its turn may have been trimmed away
    image_url = yield from image_url_flow(
        ctx.config, deadline, ctx.storage, image, policy=ctx.resize, inline_threshold=ctx.inline_threshold
    )
    profile = profile_for(endpoint)
    prompt = render_single_prompt(fitted.messages)
    return Prepared(
        endpoint=endpoint,
        profile=profile,
        arguments=build_arguments(profile, fitted, prompt, image_url),
        stop=fitted.stop,
        max_new_tokens=fitted.max_new_tokens,
        prompt_tokens=budget.prompt_tokens,
        dropped_turns=budget.dropped_turns,
    )


def _deadline_error(
    timeout: float | None, url: str, request_id: str | None, *, sent: bool = True
) -> DeadlineExceededError:
    """The error for a whole-call `timeout` that ran out on a call to `url`, worded by origin:
    fal's hosts are "fal", a server of the caller's is named by its origin."""
    shown = f"{timeout:g}" if timeout is not None else "?"
    if request_id is not None:
        stopped = "is not billed further" if is_fal_host(url) else "stops using the server"
        message = (
            f"No answer within timeout={shown}s; {request_name(url, request_id)} was cancelled so "
            f"that it {stopped}. Raise timeout= for longer jobs."
        )
    elif sent:
        server = server_name(url)
        reached = "fal" if is_fal_host(url) else "it"
        message = (
            f"timeout={shown}s ran out before {server} gave a request id; if the request reached "
            f"{reached}, the job may still run. Raise timeout=."
        )
    else:
        message = f"timeout={shown}s ran out before anything was sent. Raise timeout=."
    return DeadlineExceededError(message, timeout=timeout or 0.0, request_id=request_id)


def _prepare_in_time(
    ctx: FalContext, deadline: Deadline, request: VisionRequest
) -> Generator[Effect, Any, Prepared]:
    """`prepare_flow`, with the deadline running out before anything was sent as its error."""
    try:
        return (yield from prepare_flow(ctx, deadline, request))
    except DeadlineHit:
        raise _deadline_error(deadline.timeout, ctx.config.queue_url, None, sent=False) from None


def _run_request(config: FalConfig, prepared: Prepared, *, stream: bool) -> HttpRequest:
    """The POST to fal's run host: `{run}/{endpoint}`, or `{run}/{endpoint}/stream` for SSE output."""
    url = f"{config.run_url}/{prepared.endpoint}" + (STREAM_SUFFIX if stream else "")
    headers = config.job_headers(url)
    if stream:
        headers["Accept"] = "text/event-stream"
    return HttpRequest(
        "POST",
        url,
        headers=headers,
        json_body=dict(prepared.arguments),
        connect_timeout=config.connect_timeout,
        read_timeout=config.run_timeout,
        label="stream" if stream else "run",
        phase=Phase.SUBMIT,
    )


def submit_job_flow(
    ctx: FalContext, deadline: Deadline, request: VisionRequest
) -> Generator[Effect, Any, tuple[Job, Prepared]]:
    """Prepare and queue the request."""
    prepared = yield from _prepare_in_time(ctx, deadline, request)
    config = ctx.config
    proposed = propose_request_id(config)
    try:
        job = yield from submit_flow(config, deadline, prepared.endpoint, prepared.arguments, proposed)
    except DeadlineHit:
        if config.queue_url not in config.idempotent_hosts:
            raise _deadline_error(deadline.timeout, config.queue_url, None) from None
        # The server adopts proposed ids: the job, if it was queued, has this id. Cancel it.
        job = Job(proposed, prepared.endpoint, config.queue_url)
        yield from cancel_quietly(config, job)
        raise _deadline_error(deadline.timeout, config.queue_url, proposed) from None
    if deadline.expired():  # the id arrived in the grace period: cancel rather than leave it running
        yield from cancel_quietly(ctx.config, job)
        raise _deadline_error(deadline.timeout, job.queue_url, job.request_id)
    return job, prepared


def finish_flow(
    ctx: FalContext, deadline: Deadline, job: Job, prepared: Prepared | None
) -> Generator[Effect, Any, VisionResult]:
    """Wait for a queued job and fetch its result at once; on the deadline, cancel it."""
    tracker = LogTracker()
    try:
        done = yield from wait_flow(ctx.config, deadline, job, tracker)
        check_completed(done, job.queue_url)
        data = yield from result_flow(ctx.config, deadline, job)
        yield CloseStream(drain=True)
    except DeadlineHit:
        yield from cancel_quietly(ctx.config, job)
        raise _deadline_error(deadline.timeout, job.queue_url, job.request_id) from None
    except Abandoned:  # the caller gave up (task cancelled, Ctrl-C): do not leave the job running
        yield from cancel_quietly(ctx.config, job)
        raise
    text = read_output(data, profile_for(job.endpoint), job.request_id)
    logs = tuple(line.message for line in done.logs)
    if prepared is not None:
        return prepared.result(text, job.request_id, done.metrics, logs)
    return build_result(
        text,
        stop=(),
        max_new_tokens=None,
        prompt_tokens=0,
        model=job.endpoint,
        request_id=job.request_id,
        metrics=done.metrics,
        logs=logs,
    )


def queue_flow(
    ctx: FalContext, request: VisionRequest, timeout: float | None
) -> Generator[Effect, Any, VisionResult]:
    """Subscribe: submit, wait (emitting `FalStatus` updates), fetch the result."""
    deadline = Deadline.after(timeout)
    job, prepared = yield from submit_job_flow(ctx, deadline, request)
    return (yield from finish_flow(ctx, deadline, job, prepared))


def events_flow(ctx: FalContext, job: Job) -> Generator[Effect, Any, FalStatus]:
    """Emit the job's status updates until it completes."""
    return (yield from wait_flow(ctx.config, Deadline(), job, LogTracker()))


def run_flow(
    ctx: FalContext, request: VisionRequest, timeout: float | None
) -> Generator[Effect, Any, VisionResult]:
    """One synchronous `POST {run}/{endpoint}`: no queue."""
    deadline = Deadline.after(timeout)
    prepared = yield from _prepare_in_time(ctx, deadline, request)
    run = _run_request(ctx.config, prepared, stream=False)
    try:
        response, data = yield from call(ctx.config, deadline, run)
    except DeadlineHit:
        raise _deadline_error(timeout, run.url, None) from None
    raise_for_status(response, endpoint=prepared.endpoint)
    request_id = response.headers.get(REQUEST_ID_HEADER.lower())
    return prepared.result(read_output(data, prepared.profile, request_id), request_id)


def stream_flow(
    ctx: FalContext, request: VisionRequest, timeout: float | None
) -> Generator[Effect, Any, None]:
    """`POST {run}/{endpoint}/stream`: emit a chunk of new text per event; the last has the result."""
    deadline = Deadline.after(timeout)
    prepared = yield from _prepare_in_time(ctx, deadline, request)
    post = _run_request(ctx.config, prepared, stream=True)
    try:
        response = yield from open_stream(ctx.config, deadline, post)
    except DeadlineHit:
        raise _deadline_error(timeout, post.url, None) from None
    raise_for_status(response, endpoint=prepared.endpoint)
    request_id = response.headers.get(REQUEST_ID_HEADER.lower())
    scanner = StopScanner((*prepared.stop, *LLAMA3_STOP_STRINGS))
    raw = ""
    while not scanner.stopped:
        if deadline.expired():
            yield CloseStream()
            raise _deadline_error(timeout, post.url, None)
        event = yield NextEvent(deadline.bound(None))  # no read may outlast the deadline
        if not isinstance(event, SseEvent):
            if isinstance(event, TransportFailure):
                if deadline.expired():
                    raise _deadline_error(timeout, post.url, None)
                raise APIConnectionError(
                    f"The answer stream from {post.url} broke after {len(raw)} characters ({event.message}); "
                    "it was not re-sent. Try again, or use generate() (the queue survives such breaks).",
                    request_id=request_id,
                )
            break  # the stream ended
        output = _event_output(event, request_id)
        if output is None:
            continue
        delta = output[len(raw) :] if output.startswith(raw) else output
        raw = output if output.startswith(raw) else raw + output
        emitted = scanner.feed(delta)
        if emitted:
            yield Emit(VisionChunk(delta=emitted))
    if scanner.stopped:
        yield CloseStream()
    yield Emit(VisionChunk(delta=scanner.flush(), result=prepared.result(raw, request_id)))


def _event_output(event: SseEvent, request_id: str | None) -> str | None:
    """The cumulative output text of one /stream event; None for events without one."""
    try:
        data = loads(event.data)  # too deep: BadBody, a ValueError
    except ValueError:
        return None
    if not isinstance(data, Mapping):
        return None
    output = data.get("output")
    if isinstance(output, str):
        return output
    if "error" in data or "detail" in data:
        detail = data.get("error") or data.get("detail")
        raise JobFailedError(f"The answer stream reported an error: {detail}", request_id=request_id)
    return None

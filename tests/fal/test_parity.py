"""Sync and async paths give the same results: every public method, over the same cases."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from llava_bridge import LlavaError, VisionChunk, VisionRequest, VisionResult
from llava_bridge.backends.fal.backend import FalBackend, FalStatus
from tests.fal.conftest import photo_bytes
from tests.fal.fal_test_server import FalTestServer, fal_error

PHOTO = photo_bytes(1200, 900)


def _result(result: VisionResult) -> dict[str, Any]:
    return result.model_dump(exclude={"request_id"})


def _chunks(chunks: list[VisionChunk]) -> list[Any]:
    return [c.delta for c in chunks] + [_result(chunks[-1].result)] if chunks[-1].result else []


_ORDER = ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")


def _events(events: list[FalStatus]) -> tuple[Any, ...]:
    """What the events say, not how many there were: on a loaded machine the status stream
    opens later and the server folds several changes into one event. Statuses must still
    only move forward."""
    ranks = [_ORDER.index(e.status) for e in events]
    assert ranks == sorted(ranks), [e.status for e in events]
    logs = [line.message for e in events for line in e.logs]
    return events[-1].status, logs, events[-1].error


def _error(exc: LlavaError) -> tuple[str, str]:
    """Class and message, without the request id and httpx's own wording of a socket error."""
    request_id = getattr(exc, "request_id", None)
    message = re.sub(r"\((\w+Error)[^)]*\)", r"(\1)", str(exc).replace(str(request_id), "<id>"))
    return type(exc).__name__, message


Sync = Callable[[FalBackend], Any]
Async = Callable[[FalBackend], Awaitable[Any]]


def _generate(request: VisionRequest) -> tuple[Sync, Async]:
    async def run(b: FalBackend) -> Any:
        return _result(await b.agenerate(request))

    return (lambda b: _result(b.generate(request))), run


def _stream(request: VisionRequest) -> tuple[Sync, Async]:
    async def run(b: FalBackend) -> Any:
        return _chunks([c async for c in b.astream(request)])

    return (lambda b: _chunks(list(b.stream(request)))), run


def _submit_follow(request: VisionRequest) -> tuple[Sync, Async]:
    def sync(b: FalBackend) -> Any:
        handle = b.submit(request)
        events = _events(list(handle.iter_events()))
        status = handle.status()
        return events, _result(handle.result()), handle.cancel(), [x.message for x in status.logs]

    async def run(b: FalBackend) -> Any:
        handle = await b.asubmit(request)
        events = _events([e async for e in handle.iter_events()])
        status = await handle.status()
        return events, _result(await handle.result()), await handle.cancel(), [x.message for x in status.logs]

    return sync, run


def _resume(request: VisionRequest) -> tuple[Sync, Async]:
    def sync(b: FalBackend) -> Any:
        return _result(b.handle(b.submit(request).request_id).result())

    async def run(b: FalBackend) -> Any:
        return _result(await b.ahandle((await b.asubmit(request)).request_id).result())

    return sync, run


ASK = VisionRequest(prompt="Describe it.", stop=["it."])
PHOTO_ASK = VisionRequest(prompt="What size?", image=PHOTO, max_new_tokens=8)

CASES: dict[str, tuple[dict[str, Any], Callable[[FalTestServer], None], tuple[Sync, Async]]] = {
    "generate": ({}, lambda s: None, _generate(ASK)),
    "generate-photo-upload": ({}, lambda s: None, _generate(PHOTO_ASK)),
    # Polls 0.2 s apart against a 0.3 s job (and, below, a 0.5 s deadline): the number of
    # polls, which the request lists compare, does not hang on a few ms of scheduling.
    "generate-polling": (
        {"status_stream": False, "poll_interval": 0.2},
        lambda s: setattr(s, "job_seconds", 0.3),
        _generate(ASK),
    ),
    "generate-run-mode": ({"mode": "run"}, lambda s: None, _generate(ASK)),
    "stream": ({}, lambda s: None, _stream(ASK)),
    "stream-no-stop": ({}, lambda s: None, _stream(VisionRequest(prompt="tell me more words"))),
    "submit-follow": ({}, lambda s: None, _submit_follow(ASK)),
    "resume": ({}, lambda s: None, _resume(ASK)),
    "job-error": ({}, lambda s: setattr(s, "job_error", ("boom", "runner_server_error")), _generate(ASK)),
    "fal-503": ({}, lambda s: s.fail("submit", "http", **fal_error(503)), _generate(ASK)),
    "ambiguous-submit": ({}, lambda s: s.fail("submit", "reset_after"), _generate(ASK)),
    "deadline": (
        # One poll interval longer than the deadline: how many polls fit cannot hang on scheduling.
        {"timeout": 1.0, "status_stream": False, "poll_interval": 30.0},
        lambda s: setattr(s, "job_seconds", 30.0),
        _generate(ASK),
    ),
    "text-only-error": ({"text_only": "error"}, lambda s: None, _generate(ASK)),
}


def _outcome_sync(fn: Sync, backend: FalBackend) -> Any:
    try:
        return fn(backend)
    except LlavaError as exc:
        return _error(exc)


async def _outcome_async(fn: Async, backend: FalBackend) -> Any:
    try:
        return await fn(backend)
    except LlavaError as exc:
        return _error(exc)


@pytest.mark.parametrize("name", list(CASES))
async def test_sync_and_async_agree(
    name: str, server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    options, setup, (sync_fn, async_fn) = CASES[name]

    server.reset()
    setup(server)
    sync_backend = make_backend(**options)
    sync_outcome = _outcome_sync(sync_fn, sync_backend)
    sync_requests = [(r.route, r.method, r.query) for r in server.requests]

    server.reset()
    setup(server)
    async_backend = make_backend(**options)
    async_outcome = await _outcome_async(async_fn, async_backend)
    async_requests = [(r.route, r.method, r.query) for r in server.requests]
    await async_backend.aclose()

    assert async_outcome == sync_outcome
    assert async_requests == sync_requests
    assert sync_outcome  # something was compared

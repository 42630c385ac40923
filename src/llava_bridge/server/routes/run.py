"""fal's synchronous run and `/stream`, under `RUN_PREFIX`.

`POST {RUN_PREFIX}/{owner}/{alias}` answers with the output in the same response.
Both answers (errors too) carry a fresh request id in `X-Fal-Request-Id`, as fal's do.
`POST {RUN_PREFIX}/{owner}/{alias}/stream` answers with server-sent events, each
`{"output": <text so far>, "partial": true}`, then a last one with
`"partial": false`, `finish_reason` and `usage`. Bad input is refused with a
JSON 4xx before the stream starts; a failure mid-stream ends it with an
`event: error` carrying `{"detail", "error_type"}`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from llava_bridge.backends.fal.protocol import (
    APP_TEMPLATE,
    ERROR_TYPE_HEADER,
    REQUEST_ID_HEADER,
    RUN_PREFIX,
    STREAM_SUFFIX,
)
from llava_bridge.server.context import Context, base_url
from llava_bridge.server.http.sse import sse_event
from llava_bridge.server.inputs import LlavaInput, LlavaOutput, error_answer, output_body
from llava_bridge.types import VisionChunk

__all__ = ["router"]

router = APIRouter(prefix=RUN_PREFIX, tags=["run"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown endpoint."},
    422: {"description": "Invalid input or image."},
}


@router.post(
    "/" + APP_TEMPLATE, response_model=LlavaOutput, responses=_ERRORS, summary="Run and wait for the output"
)
async def run(
    owner: str, alias: str, arguments: LlavaInput, request: Request, context: Context
) -> JSONResponse:
    context.app_id(owner, alias)
    headers = {REQUEST_ID_HEADER: str(uuid.uuid4())}
    file_id = context.resolver.stored_file_id(arguments.image_url, base_url(request))
    try:
        result = await context.runner.run_now(arguments.model_dump(exclude_none=True), file_id)
    except Exception as exc:
        status, body = error_answer(exc)
        if "error_type" in body:
            headers[ERROR_TYPE_HEADER] = body["error_type"]
        return JSONResponse(body, status_code=status, headers=headers)
    return JSONResponse(output_body(result), headers=headers)


@router.post(
    "/" + APP_TEMPLATE + STREAM_SUFFIX,
    response_model=None,
    responses={**_ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "Partial outputs."}},
    summary="Run and stream partial outputs as server-sent events",
)
async def stream(
    owner: str, alias: str, arguments: LlavaInput, request: Request, context: Context
) -> StreamingResponse | JSONResponse:
    context.app_id(owner, alias)
    request_id = str(uuid.uuid4())
    file_id = context.resolver.stored_file_id(arguments.image_url, base_url(request))
    chunks = context.runner.stream_now(arguments.model_dump(exclude_none=True), file_id)
    try:
        first = await anext(chunks)
    except Exception as exc:
        await chunks.aclose()
        status, body = error_answer(exc)
        return JSONResponse(body, status_code=status, headers={REQUEST_ID_HEADER: request_id})

    async def events() -> AsyncIterator[str]:
        text = ""
        chunk: VisionChunk | None = first
        try:
            while chunk is not None:
                text += chunk.delta
                if chunk.result is not None:
                    yield sse_event(output_body(chunk.result))
                    return
                yield sse_event({"output": text, "partial": True})
                chunk = await anext(chunks, None)
            yield sse_event({"output": text, "partial": False})
        except Exception as exc:
            _, body = error_answer(exc)
            yield sse_event(body, event="error")
        finally:
            await chunks.aclose()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", REQUEST_ID_HEADER: request_id},
        background=BackgroundTask(chunks.aclose),
    )

"""OpenAI's chat API: `GET /v1/models`, `GET /v1/models/{model}`, `POST /v1/chat/completions`.

Any OpenAI client (the `openai` SDK, LangChain's `ChatOpenAI`, LlamaIndex's
`OpenAILike`) reaches the server's backend here, with `base_url` set to
`http://HOST:PORT/v1`. Completions take the same slots as the queue workers, so
the backend never sees more than `--concurrency` requests at once. Every error is
OpenAI-shaped (`server/openai/errors.py`); the API key, `Authorization: Bearer
<key>`, is checked by the server's `AuthMiddleware` before these routes run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from llava_bridge.server.context import ServerContext, base_url
from llava_bridge.server.logcapture import job_context
from llava_bridge.server.openai.convert import to_vision_request
from llava_bridge.server.openai.errors import OpenAIError, from_exception, from_validation
from llava_bridge.server.openai.models import ServedModels
from llava_bridge.server.openai.responses import DONE_EVENT, Completion, chunk_event, model_body, models_body
from llava_bridge.server.openai.schema import inline_schema
from llava_bridge.server.openai.wire import ChatCompletionRequest
from llava_bridge.types import VisionChunk, VisionResult

__all__ = ["router"]

PARSE_IN_THREAD_BYTES = 64 * 1024
"""Bodies larger than this (a data: URI) are parsed off the event loop."""

_STARTED = int(time.time())


class _OpenAIRoute(APIRoute):
    """A route whose `OpenAIError`s, raised by it or its dependencies, become OpenAI-shaped answers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError as exc:
                return exc.response()

        return handle


def openai_context(request: Request) -> ServerContext:
    """The running server's parts, or a 503 while it starts or stops."""
    context = getattr(request.app.state, "llava_bridge", None)
    if not isinstance(context, ServerContext):
        raise OpenAIError(
            503, "The server is starting or stopping; try again in a moment.", type="server_error"
        )
    return context


router = APIRouter(prefix="/v1", tags=["openai"], route_class=_OpenAIRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid request (OpenAI's error shape)."},
    401: {"description": "Missing or wrong API key."},
    404: {"description": "Unknown model."},
}


def _served(context: ServerContext) -> ServedModels:
    return ServedModels(context.settings.endpoints, context.backend.model_name)


@router.get("/models", summary="The model ids this server answers for", responses=_ERRORS)
async def list_models(request: Request) -> JSONResponse:
    return JSONResponse(models_body(_served(openai_context(request)).listed, _STARTED))


@router.get("/models/{model:path}", summary="One model id", responses=_ERRORS)
async def retrieve_model(model: str, request: Request) -> JSONResponse:
    return JSONResponse(model_body(_served(openai_context(request)).resolve(model), _STARTED))


@router.post(
    "/chat/completions",
    summary="A chat completion (or a stream of chunks), in OpenAI's format",
    responses={
        **_ERRORS,
        200: {
            "content": {"application/json": {}, "text/event-stream": {}},
            "description": "The completion, or with `stream: true` its chunks as server-sent events.",
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(ChatCompletionRequest)}},
        }
    },
)
async def chat_completions(request: Request) -> Response:
    context = openai_context(request)
    body = await _parse(await request.body())
    completion = Completion(_served(context).resolve(body.model))
    headers = {"x-request-id": completion.id}
    if body.stream:
        return await _stream(context, body, completion, base_url(request))
    async with context.runner.slots:
        with job_context(context.runner, None):
            try:
                vision = await to_vision_request(body, context.resolver, base_url(request))
                result = await context.backend.agenerate(vision)
            except Exception as exc:
                raise from_exception(exc) from None
    return JSONResponse(completion.body(result), headers=headers)


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def not_served(path: str) -> Response:
    """Any other OpenAI route (completions, embeddings, responses, ...): a 404 naming the ones served."""
    advice = " (LlamaIndex's OpenAILike: is_chat_model=True)" if path == "completions" else ""
    raise OpenAIError(
        404,
        f"This server has no /v1/{path}; it serves /v1/chat/completions{advice} and /v1/models.",
        code="unknown_url",
    )


async def _parse(raw: bytes) -> ChatCompletionRequest:
    try:
        if len(raw) > PARSE_IN_THREAD_BYTES:
            return await asyncio.to_thread(ChatCompletionRequest.model_validate_json, raw)
        return ChatCompletionRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise from_validation(exc) from None


async def _stream(
    context: ServerContext, body: ChatCompletionRequest, completion: Completion, url: str
) -> Response:
    """Refuse bad input with a JSON error before the stream starts; then stream the chunks."""
    chunks = _chunks(context, body, url)
    try:
        first = await anext(chunks, None)
    except Exception as exc:
        await chunks.aclose()
        raise from_exception(exc) from None
    events = _events(first, chunks, completion, include_usage=body.include_usage)
    return _ClosingStreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "x-request-id": completion.id},
    )


async def _chunks(
    context: ServerContext, body: ChatCompletionRequest, url: str
) -> AsyncGenerator[VisionChunk, None]:
    """The backend's chunks, holding one of the workers' slots until the stream ends."""
    async with context.runner.slots:
        with job_context(context.runner, None):
            vision = await to_vision_request(body, context.resolver, url)
        stream = aiter(context.backend.astream(vision))
        try:
            while True:
                with job_context(context.runner, None):  # entered and left within one step: no yield inside
                    chunk = await anext(stream, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()


async def _events(
    first: VisionChunk | None,
    chunks: AsyncGenerator[VisionChunk, None],
    completion: Completion,
    *,
    include_usage: bool,
) -> AsyncGenerator[str, None]:
    """OpenAI's chunks: the role, the text pieces, the finish reason, the usage, `[DONE]`."""

    def event(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        return chunk_event(completion.chunk(delta, finish_reason, with_usage_field=include_usage))

    result: VisionResult | None = None
    try:
        yield event({"role": "assistant", "content": ""})
        chunk = first
        while chunk is not None:
            if chunk.delta:
                yield event({"content": chunk.delta})
            if chunk.result is not None:
                result = chunk.result
                break
            chunk = await anext(chunks, None)
        yield event({}, (result.finish_reason if result else None) or "stop")
        if include_usage:
            yield chunk_event(completion.usage_chunk(result.usage if result else VisionResult(text="").usage))
    except Exception as exc:
        yield chunk_event(from_exception(exc).body())
    finally:
        await chunks.aclose()
    yield DONE_EVENT


class _ClosingStreamingResponse(StreamingResponse):
    """A stream whose events (and so the backend's stream and the slot) are closed when it ends,
    also when the client goes away mid-stream."""

    def __init__(self, content: AsyncGenerator[str, None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._events = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()

"""`create_app`: the ASGI app that serves a backend over fal's protocol.

URL layout, when every fal host points at this one server (as `FalBackend`
does with `base_url=`, and `fal_client` with its host variables):

- queue (`queue.fal.run`): at the root: `POST /{owner}/{alias}`,
  `GET /{owner}/{alias}/requests/{id}/status[/stream]`, `GET .../requests/{id}`,
  `PUT .../requests/{id}/cancel`
- run (`fal.run`): under `/run`: `POST /run/{owner}/{alias}[/stream]`
- rest (`rest.fal.ai`): under `/rest`: `POST /rest/storage/auth/token`,
  `POST /rest/storage/upload/initiate`
- cdn (`v3.fal.media`): under `/cdn`: `POST /cdn/files/upload`,
  `PUT /cdn/uploads/{id}`, `GET /cdn/files/{id}`

plus `GET /health` and `GET /openapi.json`. Errors are `{"detail": ...}` with a
4xx for anything the caller sent wrong (422 for schema errors).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from llava_bridge._version import __version__
from llava_bridge.backends.base import Backend
from llava_bridge.backends.fal.protocol import CDN_PREFIX, FILES_PATH
from llava_bridge.server.context import ServerContext, get_context
from llava_bridge.server.http.auth import Authenticator, AuthMiddleware
from llava_bridge.server.http.hosts import HostAllowListMiddleware
from llava_bridge.server.http.limits import BodySizeLimitMiddleware
from llava_bridge.server.images.fetch import ImageFetcher
from llava_bridge.server.images.loader import ImageResolver
from llava_bridge.server.images.ssrf import AddressGuard, Resolver
from llava_bridge.server.inputs import validation_message
from llava_bridge.server.jobs import check_job_store_location, open_job_store
from llava_bridge.server.routes.openai_chat import router as openai_router
from llava_bridge.server.routes.queue import router as queue_router
from llava_bridge.server.routes.run import router as run_router
from llava_bridge.server.routes.storage import router as storage_router
from llava_bridge.server.runner import JobRunner
from llava_bridge.server.settings import ServerSettings

__all__ = ["create_app"]

logger = logging.getLogger("llava_bridge.server")

_MAX_ECHOED_INPUT = 200


def create_app(
    backend: Backend,
    settings: ServerSettings | None = None,
    *,
    resolver: Resolver | None = None,
    fetch_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The server app for `backend`; the job store opens when the app starts (lifespan).

    `resolver` and `fetch_transport` replace DNS resolution and the HTTP transport
    used to fetch image URLs (for tests). Raises ConfigurationError at once for a
    `db_path` no store is known for.
    """
    settings = settings or ServerSettings()
    check_job_store_location(settings.db_path)
    authenticator = Authenticator(settings.api_key)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await open_job_store(settings.db_path)
        guard = AddressGuard.from_settings(
            allow_private=settings.allow_private_urls,
            allowed_hosts=settings.allowed_url_hosts,
            resolver=resolver,
        )
        fetcher = ImageFetcher(
            guard,
            timeout=settings.fetch_timeout_s,
            max_bytes=settings.fetch_max_bytes,
            max_redirects=settings.fetch_max_redirects,
            transport=fetch_transport,
        )
        images = ImageResolver(
            store, fetcher, files_path=f"{CDN_PREFIX}{FILES_PATH}", max_pixels=settings.max_image_pixels
        )
        runner = JobRunner(store, backend, images, settings)
        await runner.start()
        app.state.llava_bridge = ServerContext(settings, backend, store, runner, images, authenticator)
        try:
            yield
        finally:
            app.state.llava_bridge = None
            await runner.stop()
            await fetcher.aclose()
            await store.close()

    app = FastAPI(
        title="llava-bridge serve",
        version=__version__,
        description=(
            "fal's queue, run, stream and storage protocol in front of a llava-bridge backend "
            f"({getattr(backend, 'model_name', 'model')}). With an API key configured, send "
            "`Authorization: Key <key>`."
        ),
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.include_router(storage_router)
    app.include_router(openai_router)
    app.include_router(run_router)
    app.include_router(queue_router)
    app.add_api_route(
        "/health", _health, methods=["GET"], tags=["meta"], summary="Liveness and the backend's name"
    )
    _document_endpoints(app, settings.endpoints)
    app.add_middleware(AuthMiddleware, authenticator=authenticator, cdn_prefix=CDN_PREFIX)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.api_key is None:  # outermost: a request for another host is refused first
        app.add_middleware(HostAllowListMiddleware, allowed=settings.allowed_hosts)
    return app


def _document_endpoints(app: FastAPI, endpoints: tuple[str, ...]) -> None:
    """List the served owners and aliases as the `owner`/`alias` path parameters' values."""
    default_openapi = app.openapi
    values = {
        "owner": sorted({endpoint.split("/")[0] for endpoint in endpoints}),
        "alias": sorted({endpoint.split("/")[1] for endpoint in endpoints}),
    }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    for parameter in operation.get("parameters", []):
                        if parameter.get("in") == "path" and parameter.get("name") in values:
                            parameter["schema"] = {
                                **parameter.get("schema", {}),
                                "enum": values[parameter["name"]],
                            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _health(request: Request) -> dict[str, Any]:
    context = get_context(request)
    return {
        "status": "ok",
        "model": context.backend.model_name,
        "endpoints": list(context.settings.endpoints),
    }


class _AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped, so echoed input with lone surrogates still encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 body, without echoing large inputs (a data URI) back."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        error = dict(error)
        value = error.get("input")
        if isinstance(value, (str, bytes)) and len(value) > _MAX_ECHOED_INPUT:
            error["input"] = f"<{len(value):,} characters>"
        elif isinstance(value, (dict, list)) and len(repr(value)) > _MAX_ECHOED_INPUT:
            error.pop("input")
        errors.append(error)
    detail = jsonable_encoder(errors)
    return _AsciiJSONResponse({"detail": detail, "message": validation_message(detail)}, status_code=422)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error(
        "Unexpected error on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc
    )
    return JSONResponse(
        {"detail": "Internal server error; see the server's log.", "error_type": "internal_error"},
        status_code=500,
    )

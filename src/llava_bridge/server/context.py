"""What every route needs, made when the app starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from llava_bridge.backends.base import Backend
from llava_bridge.server.http.auth import Authenticator
from llava_bridge.server.images.loader import ImageResolver
from llava_bridge.server.jobs.protocol import JobStore
from llava_bridge.server.runner import JobRunner
from llava_bridge.server.settings import ServerSettings

__all__ = ["Context", "ServerContext", "base_url", "context_dependency", "get_context"]


@dataclass(frozen=True)
class ServerContext:
    """The running server's parts."""

    settings: ServerSettings
    backend: Backend
    store: JobStore
    runner: JobRunner
    resolver: ImageResolver
    authenticator: Authenticator

    def app_id(self, owner: str, alias: str) -> str:
        """`owner/alias` when this server serves it, else a 404 in fal's shape."""
        app = f"{owner}/{alias}"
        if app not in self.settings.endpoints:
            raise HTTPException(
                404,
                detail=f'Application "{alias}" not found; '
                f"this server serves {', '.join(self.settings.endpoints)}.",
            )
        return app


def get_context(request: Request) -> ServerContext:
    context = getattr(request.app.state, "llava_bridge", None)
    if not isinstance(context, ServerContext):
        raise HTTPException(503, detail="The server is starting or stopping; try again in a moment.")
    return context


async def context_dependency(request: Request) -> ServerContext:
    """`get_context` as a dependency; async, because FastAPI runs sync ones in a thread pool."""
    return get_context(request)


Context = Annotated[ServerContext, Depends(context_dependency)]
"""A route parameter typed `Context` gets the running server's parts."""


def base_url(request: Request) -> str:
    """The URL the client reached this server at, without a trailing slash."""
    return str(request.base_url).rstrip("/")

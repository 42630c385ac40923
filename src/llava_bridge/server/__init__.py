"""`llava-bridge serve`: fal's queue protocol in front of any backend, on your own machine.

`serve(backend=...)` runs it (blocking); `create_app(backend, settings)` gives the
ASGI app to run another way. The URL layout is in `llava_bridge.server.app`.
Needs the `[server]` extra (FastAPI, uvicorn).
"""

from __future__ import annotations

from .app import create_app
from .cli import add_serve_arguments, serve_from_args
from .serving import READY_LINE, serve
from .settings import DEFAULT_DB_PATH, DEFAULT_ENDPOINTS, ServerSettings

__all__ = [
    "DEFAULT_DB_PATH",
    "DEFAULT_ENDPOINTS",
    "READY_LINE",
    "ServerSettings",
    "add_serve_arguments",
    "create_app",
    "serve",
    "serve_from_args",
]

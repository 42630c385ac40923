"""`llava-bridge serve`: fal's queue protocol in front of any backend, on your own machine.

`serve(backend=...)` runs it (blocking); `create_app(backend, settings)` gives the
ASGI app to run another way. The URL layout is in `llava_bridge.server.app`.
Needs the `[server]` extra (FastAPI, uvicorn).
"""

from __future__ import annotations

from llava_bridge._extras import require_extra

require_extra("server", "fastapi", "uvicorn", what="llava-bridge serve")

from llava_bridge.server.app import create_app  # noqa: E402 (the extra is checked first)
from llava_bridge.server.cli import add_serve_arguments, serve_from_args  # noqa: E402 (the extra is checked first)
from llava_bridge.server.serving import READY_LINE, serve  # noqa: E402 (the extra is checked first)
from llava_bridge.server.settings import DEFAULT_DB_PATH, DEFAULT_ENDPOINTS, ServerSettings  # noqa: E402 (the extra is checked first)

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

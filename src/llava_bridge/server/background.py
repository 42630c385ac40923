"""`BackgroundServer`: the server in a thread of this process, for notebooks, demos and tests.

    with BackgroundServer(FakeBackend.image_facts()) as server:
        backend = FalBackend(base_url=server.url)

It listens on 127.0.0.1 on a free port, keeps its jobs in a temporary database
(unless `settings` names one), and stops when the block ends or `stop()` is called.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from types import TracebackType

import uvicorn

from llava_bridge.backends.base import Backend
from llava_bridge.server.app import create_app
from llava_bridge.server.serving import uvicorn_config
from llava_bridge.server.settings import DEFAULT_DB_PATH, ServerSettings

__all__ = ["BackgroundServer"]

_START_TIMEOUT = 30.0


class BackgroundServer:
    """`llava-bridge serve` in a daemon thread; `url` is where FalBackend should point."""

    def __init__(self, backend: Backend, settings: ServerSettings | None = None, *, port: int = 0) -> None:
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        settings = settings or ServerSettings()
        if settings.db_path == DEFAULT_DB_PATH:
            self._tempdir = tempfile.TemporaryDirectory(prefix="llava-bridge-")
            settings = dataclasses.replace(settings, db_path=f"{self._tempdir.name}/jobs.sqlite3")
        config = uvicorn_config(
            create_app(backend, settings), settings, host="127.0.0.1", port=port, log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="llava-bridge-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("The background llava-bridge server did not start; see the log above.")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        """Stop serving and wait for the thread (up to 10 s)."""
        self._server.should_exit = True
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"BackgroundServer(url={getattr(self, 'url', None)!r})"

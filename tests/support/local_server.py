"""Start `llava-bridge serve` as a real process on an ephemeral 127.0.0.1 port, for tests.

Usage::

    from tests.support.local_server import running_server

    with running_server("--backend", "fake", "--fake-latency", "0.05") as server:
        backend = FalBackend(base_url=server.base_url, api_key="test")
        ...
        server.kill()          # SIGKILL, like a crash
        server.restart()       # same arguments, same database, same port

`running_server(*args, db_path=None, env=None, timeout=30)` runs
``python -m llava_bridge.server --host 127.0.0.1 --port 0 --db DB *args``. The
server prints ``llava-bridge serving on http://HOST:PORT`` once it listens; the
helper waits for that line (up to `timeout` seconds) and yields a `LocalServer`
with `base_url` (no trailing slash), `process`, `db_path` and `stderr_text()`.

- `db_path=None` uses a fresh database in a temporary folder that is removed
  afterwards; pass a path to keep it (e.g. to inspect it or share it between starts).
- `env` adds to (does not replace) the current environment.
- Extra `args` go after the defaults, so `"--port", "8123"` or `"--db", path` override them.
- The process is always stopped on exit (SIGTERM, then SIGKILL after 5 s), even
  when the test fails. If it exits early, `ServerStartError` shows its stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = ["LocalServer", "ServerStartError", "running_server"]

_READY = re.compile(r"^llava-bridge serving on (http://\S+)$")


class ServerStartError(RuntimeError):
    """The server process exited or did not print its URL in time."""


class LocalServer:
    """A running `llava-bridge serve` process and how to reach it."""

    def __init__(
        self, args: tuple[str, ...], db_path: str, env: Mapping[str, str] | None, timeout: float
    ) -> None:
        self.args = args
        self.db_path = db_path
        self._env = dict(env or {})
        self._timeout = timeout
        self._stderr_dir = tempfile.TemporaryDirectory(prefix="llava-bridge-server-log-")
        self._starts = 0
        self.base_url = ""
        self.process: subprocess.Popen[str] | None = None
        self._stderr_path = ""

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def start(self, *extra: str) -> None:
        """Start the process (again) and wait until it serves; `extra` args go last."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("The server is already running; stop or kill it first.")
        self._starts += 1
        self._stderr_path = os.path.join(self._stderr_dir.name, f"stderr-{self._starts}.log")
        command = [
            sys.executable,
            "-m",
            "llava_bridge.server",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--db",
            self.db_path,
            *self.args,
            *extra,
        ]
        env = {**os.environ, **self._env, "PYTHONUNBUFFERED": "1"}
        src = str(Path(__file__).resolve().parents[2] / "src")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
        with open(self._stderr_path, "w") as stderr:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
            )
        self.base_url = self._wait_for_url(self.process)

    def _wait_for_url(self, process: subprocess.Popen[str]) -> str:
        assert process.stdout is not None
        found: list[str] = []
        ready = threading.Event()

        def read_stdout() -> None:
            assert process.stdout is not None
            for line in process.stdout:  # keeps draining after the URL so the pipe never fills
                match = _READY.match(line.strip())
                if match and not found:
                    found.append(match.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read_stdout, daemon=True).start()
        ready.wait(self._timeout)
        if not found:
            self._stop(process)
            raise ServerStartError(
                f"llava-bridge serve did not start within {self._timeout} s "
                f"(exit code {process.returncode}).\nstderr:\n{self.stderr_text()[-4000:]}"
            )
        return found[0].rstrip("/")

    def stderr_text(self) -> str:
        """What the current (or last) process wrote to stderr."""
        try:
            return Path(self._stderr_path).read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the process (a crash: no shutdown code runs) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), or SIGKILL after 5 s."""
        if self.process is not None:
            self._stop(self.process)

    def restart(self, *extra: str, same_port: bool = True) -> None:
        """Stop if running, then start again on the same database (and port, by default)."""
        port = self.port if self.base_url else 0
        self.stop()
        self.start(*(("--port", str(port)) if same_port and port else ()), *extra)

    @staticmethod
    def _stop(process: subprocess.Popen[str]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def close(self) -> None:
        self.stop()
        self._stderr_dir.cleanup()


@contextlib.contextmanager
def running_server(
    *args: str,
    db_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> Iterator[LocalServer]:
    """A `llava-bridge serve` process for the duration of the block; see the module docstring."""
    with contextlib.ExitStack() as stack:
        if db_path is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="llava-bridge-db-"))
            db_path = os.path.join(folder, "jobs.db")
        server = LocalServer(tuple(args), os.fspath(db_path), env, timeout)
        stack.callback(server.close)
        server.start()
        yield server

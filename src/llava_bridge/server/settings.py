"""`ServerSettings`: everything `llava-bridge serve` can be told, with safe defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import SecretStr

from llava_bridge.backends.fal.protocol import CDN_PREFIX, REST_PREFIX, RUN_PREFIX, endpoint_id_problem
from llava_bridge.defaults import DEFAULT_ENDPOINT
from llava_bridge.errors import ConfigurationError
from llava_bridge.images import MAX_PIXELS

__all__ = ["DEFAULT_DB_PATH", "DEFAULT_ENDPOINTS", "RESERVED_OWNERS", "ServerSettings"]

DEFAULT_ENDPOINTS = (DEFAULT_ENDPOINT, "fal-ai/llavav15-13b", "fal-ai/llava-next")
"""Endpoint ids served by default; all are answered by the one backend."""

DEFAULT_DB_PATH = os.path.join(
    os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state"),
    "llava-bridge",
    "server.db",
)
"""Where jobs are kept when no database path is given."""

RESERVED_OWNERS = frozenset(
    {prefix.strip("/") for prefix in (RUN_PREFIX, REST_PREFIX, CDN_PREFIX)}
    | {"health", "openapi.json", "docs", "redoc", "v1"}
)
"""First path segments the server's own routes use: no endpoint id may start with one
(`cdn/files` would put results under the public `/cdn/files/` prefix)."""


@dataclass(frozen=True, repr=False)
class ServerSettings:
    """Settings of the server; every limit has a default that is safe on a shared machine.

    `db_path` is the SQLite file (":memory:" keeps jobs in memory, lost on exit).
    `api_key`, when set, is required on every call as `Authorization: Key <key>`.
    `allow_private_urls` lets image URLs reach private, loopback and link-local
    addresses; `allowed_url_hosts` ("host:port" entries) permits just those.
    Without a key, requests must be addressed (`Host`) to a loopback name or one of
    `allowed_hosts` (`serve` adds the address it binds). `header_timeout_s` drops a
    connection whose request headers have not all arrived that long after its first
    byte (or after it opened).
    """

    db_path: str = DEFAULT_DB_PATH
    api_key: SecretStr | None = None
    endpoints: tuple[str, ...] = DEFAULT_ENDPOINTS
    concurrency: int = 4
    """Jobs handed to the backend at once (a batching backend batches them)."""
    max_body_bytes: int = 16 * 1024 * 1024
    result_retention_s: float = 3600.0
    file_retention_s: float = 24 * 3600.0
    purge_interval_s: float = 60.0
    allow_private_urls: bool = False
    allowed_url_hosts: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    header_timeout_s: float = 10.0
    fetch_timeout_s: float = 20.0
    fetch_max_bytes: int = 20 * 1024 * 1024
    fetch_max_redirects: int = 5
    max_image_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):
            object.__setattr__(self, "api_key", SecretStr(self.api_key))
        checks = {
            "concurrency": self.concurrency >= 1,
            "max_body_bytes": self.max_body_bytes >= 1024,
            "result_retention_s": self.result_retention_s > 0,
            "file_retention_s": self.file_retention_s > 0,
            "purge_interval_s": self.purge_interval_s > 0,
            "fetch_timeout_s": self.fetch_timeout_s > 0,
            "fetch_max_bytes": self.fetch_max_bytes >= 1,
            "fetch_max_redirects": self.fetch_max_redirects >= 0,
            "max_image_pixels": self.max_image_pixels >= 1,
            "header_timeout_s": self.header_timeout_s > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigurationError(f"Server settings out of range: {', '.join(bad)}; use positive values.")
        for endpoint in self.endpoints:
            _check_endpoint(endpoint)
        for entry in self.allowed_url_hosts:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigurationError(
                    f"Allowed URL host {entry!r} must be 'host:port', e.g. '10.0.0.5:8080'."
                )

    def __repr__(self) -> str:
        key = "'**********'" if self.api_key is not None else "None"
        return (
            f"ServerSettings(db_path={self.db_path!r}, api_key={key}, endpoints={self.endpoints!r}, "
            f"concurrency={self.concurrency}, allow_private_urls={self.allow_private_urls})"
        )


def _check_endpoint(endpoint: str) -> None:
    problem = endpoint_id_problem(endpoint)
    if problem is None and endpoint.count("/") != 1:
        problem = "this server serves 'owner/alias' ids only"
    if problem is None and endpoint.split("/")[0].lower() in RESERVED_OWNERS:
        problem = f"'{endpoint.split('/')[0]}/' is where the server's own routes live"
    if problem is not None:
        raise ConfigurationError(
            f"Endpoint id {endpoint!r} cannot be served: {problem}; "
            "use --endpoint owner/alias (e.g. fal-ai/llava-next)."
        )

"""`serve`: run the app with uvicorn and announce the URL once it listens."""

from __future__ import annotations

import ipaddress
import logging
import sys
from dataclasses import replace
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from llava_bridge.backends.base import Backend
from llava_bridge.server.app import create_app
from llava_bridge.server.http.header_timeout import with_header_timeout
from llava_bridge.server.settings import DEFAULT_DB_PATH, ServerSettings

__all__ = ["READY_LINE", "configure_logging", "serve", "uvicorn_config"]

READY_LINE = "llava-bridge serving on {url}"
"""Printed to stdout, once, when the server accepts connections (with the real port)."""

logger = logging.getLogger("llava_bridge.server")


class _AnnouncingServer(uvicorn.Server):
    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            port = self.servers[0].sockets[0].getsockname()[1]
            print(READY_LINE.format(url=f"http://{_url_host(self.config.host)}:{port}"), flush=True)


def _url_host(host: str) -> str:
    try:
        return f"[{host}]" if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address) else host
    except ValueError:
        return host


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    backend: Backend,
    api_key: str | None = None,
    db_path: str | None = None,
    allow_private_urls: bool = False,
    settings: ServerSettings | None = None,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Serve `backend` over fal's protocol until interrupted (blocking).

    `options` are further `ServerSettings` fields (e.g. `concurrency=8`,
    `result_retention_s=600`); `settings` gives them all at once. Binds
    127.0.0.1 unless told otherwise; `port=0` picks a free port. Prints
    `llava-bridge serving on http://HOST:PORT` to stdout once it listens.
    """
    base = settings or ServerSettings()
    changes: dict[str, Any] = dict(options)
    if api_key is not None:
        changes["api_key"] = api_key
    if db_path is not None:
        changes["db_path"] = db_path
    if allow_private_urls:
        changes["allow_private_urls"] = True
    final = replace(base, **changes) if changes else base
    final = replace(final, allowed_hosts=(host, *final.allowed_hosts))  # its own address is its name
    configure_logging(log_level)
    if host not in ("127.0.0.1", "localhost", "::1") and final.api_key is None:
        logger.warning(
            "Serving on %s without an API key: anyone who can reach it can use it "
            "(requests must name this host or one given with --allowed-host).",
            host,
        )
    if final.db_path == DEFAULT_DB_PATH:
        logger.info("Jobs are kept in %s (change with --db).", final.db_path)
    config = uvicorn_config(
        create_app(backend, final),
        final,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=10,
    )
    _AnnouncingServer(config).run()


def uvicorn_config(app: Any, settings: ServerSettings, **options: Any) -> uvicorn.Config:
    """uvicorn's config for the app, with the settings' header timeout on every connection."""
    return uvicorn.Config(
        app,
        http=with_header_timeout(AutoHTTPProtocol, settings.header_timeout_s),
        log_config=None,
        access_log=False,
        **options,
    )


def configure_logging(level: str) -> None:
    """Log to stderr (stdout carries only the ready line) unless logging is set up already."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(level.upper())

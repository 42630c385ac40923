"""Which transport an HTTP backend's calls go through, and closing what it opened.

An injected `httpx.Client` / `httpx.AsyncClient` is used as given (and left open).
Otherwise the backend gets our own HTTP/1.1 pools, one sync pool and one async pool per
event loop (pools cannot cross loops), or httpx when a proxy variable is set: httpx
honours them, our pools do not.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref

import httpx

from llava_bridge.backends._transport.async_pool import AsyncPool
from llava_bridge.backends._transport.bodies import DEFAULT_MAX_RESPONSE_BYTES
from llava_bridge.backends._transport.httpx_adapter import HttpxAsync, HttpxSync
from llava_bridge.backends._transport.sync_pool import SyncPool
from llava_bridge.errors import ConfigurationError

__all__ = ["PROXY_VARIABLES", "Transports", "proxied"]

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
HTTPX_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64)
"""Limits of the httpx clients made when a proxy is configured."""


def proxied() -> bool:
    """Whether a proxy variable is set."""
    return any(os.environ.get(name) for name in PROXY_VARIABLES)


class Transports:
    """A backend's transports: the injected clients, or its own (made on first use)."""

    def __init__(
        self,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if (
            isinstance(max_response_bytes, bool)
            or not isinstance(max_response_bytes, int)
            or max_response_bytes < 1
        ):
            raise ConfigurationError(
                f"max_response_bytes must be a whole number of bytes >= 1, not {max_response_bytes!r}."
            )
        self.max_response_bytes = max_response_bytes
        """The largest decoded response body any transport here accepts."""
        self._http_client = http_client
        self._async_http_client = async_http_client
        self._own_sync: SyncPool | HttpxSync | None = None
        self._own_async: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], AsyncPool | HttpxAsync]] = {}
        self._lock = threading.Lock()

    def sync(self) -> SyncPool | HttpxSync:
        """The injected client, or our own pool (httpx when a proxy variable is set)."""
        if self._http_client is not None:
            return HttpxSync(self._http_client, max_response_bytes=self.max_response_bytes)
        with self._lock:
            if self._own_sync is None:
                cap = self.max_response_bytes
                self._own_sync = (
                    HttpxSync(httpx.Client(limits=HTTPX_LIMITS), max_response_bytes=cap)
                    if proxied()
                    else SyncPool(max_response_bytes=cap)
                )
            return self._own_sync

    def for_running_loop(self) -> AsyncPool | HttpxAsync:
        """The injected async client, or our own pool for the running event loop."""
        if self._async_http_client is not None:
            return HttpxAsync(self._async_http_client, max_response_bytes=self.max_response_bytes)
        loop = asyncio.get_running_loop()
        entry = self._own_async.get(id(loop))
        if entry is None or entry[0]() is not loop:
            with self._lock:
                for key, (ref, _) in list(self._own_async.items()):
                    old = ref()
                    if old is None or old.is_closed():
                        del self._own_async[key]
                cap = self.max_response_bytes
                own = (
                    HttpxAsync(httpx.AsyncClient(limits=HTTPX_LIMITS), max_response_bytes=cap)
                    if proxied()
                    else AsyncPool(max_response_bytes=cap)
                )
                entry = (weakref.ref(loop), own)
                self._own_async[id(loop)] = entry
        return entry[1]

    def close(self) -> None:
        """Close the sync connections made here (an injected client is left open)."""
        with self._lock:
            own, self._own_sync = self._own_sync, None
        if own is not None:
            own.close()

    async def aclose(self) -> None:
        """Close the connections made here for the running event loop, and the sync ones."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._own_async.pop(id(loop), None)
        if entry is not None:
            await entry[1].aclose()
        self.close()

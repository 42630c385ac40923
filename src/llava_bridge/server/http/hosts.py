"""The Host allow-list of a server without an API key (against DNS rebinding).

A web page can make a browser send requests to a keyless server on this machine
by pointing its own host name at 127.0.0.1; those requests carry the page's host
name in `Host`. Without a key the server answers only requests addressed to a
loopback name, the address it is bound to, or a host named with `--allowed-host`;
others get 403. With a key set the key does this job and every Host is answered.
A request with no Host header at all (not from a browser) is answered.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["LOOPBACK_HOSTS", "HostAllowListMiddleware", "host_name"]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
"""Always allowed."""
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
_MAX_SHOWN = 80


def host_name(host: str) -> str:
    """The name part of a Host value or a bind address: no port, no brackets, lower case."""
    text = host.strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    if text.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        text = text.partition(":")[0]
    return text.rstrip(".")


class HostAllowListMiddleware:
    """Answers 403 to requests whose Host is not allowed; see the module docstring."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        names = {host_name(host) for host in (*LOOPBACK_HOSTS, *allowed)}
        self.allowed = frozenset(names - _WILDCARDS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if host is None or host_name(host) in self.allowed:
            await self.app(scope, receive, send)
            return
        shown = host if len(host) <= _MAX_SHOWN else host[:_MAX_SHOWN] + "..."
        detail = (
            f"Host {shown!r} is not served: without an API key this server answers only requests "
            f"addressed to {', '.join(sorted(self.allowed))}. Start it with --allowed-host NAME, "
            "or with an API key (LLAVA_BRIDGE_SERVER_KEY)."
        )
        await JSONResponse({"detail": detail}, status_code=403)(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None

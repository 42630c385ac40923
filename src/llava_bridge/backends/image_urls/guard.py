"""Which image URLs may be fetched: the SSRF guard.

A URL is allowed only when it is http or https, has a host, and every address
its host resolves to is public (not private, loopback, link-local, cloud
metadata, shared, multicast, reserved or unspecified). The guard returns the
address it checked, and the fetcher connects to exactly that address, so a DNS
answer that changes between check and connect (rebinding) cannot slip through.
`allow_private` turns the address check off; `allowed_hosts` ("host:port")
exempts just those hosts. `check` resolves without blocking the event loop;
`check_sync` is the same check for a worker thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpx

from llava_bridge.errors import InvalidImageError

__all__ = [
    "SERVER_PRIVATE_ADVICE",
    "AddressGuard",
    "Resolver",
    "SyncResolver",
    "is_public_address",
    "system_resolver",
    "system_resolver_sync",
]

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Resolve (host, port) to IP address strings."""
SyncResolver = Callable[[str, int], list[str]]
"""The same, blocking (for `check_sync`, which runs off the event loop)."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SERVER_PRIVATE_ADVICE = "a server operator can allow this with --allow-private-urls"
"""How a refused private address can be allowed, in the server's terms."""


def is_public_address(address: IPAddress) -> bool:
    """True for globally routable unicast addresses; IPv4-mapped IPv6 is judged as IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return is_public_address(mapped)
        if address.teredo is not None:
            return False
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (getaddrinfo), without blocking the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def system_resolver_sync(host: str, port: int) -> list[str]:
    """The operating system's resolver (getaddrinfo), blocking."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    literal: str | None
    """The host when it is an IP address itself (nothing to resolve)."""


@dataclass(frozen=True)
class AddressGuard:
    """Checks a URL and picks the address to connect to; raises InvalidImageError to refuse."""

    allow_private: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    resolver: Resolver = system_resolver
    sync_resolver: SyncResolver = system_resolver_sync
    private_advice: str = SERVER_PRIVATE_ADVICE
    """How the caller may allow a refused private address, in the caller's terms."""

    @classmethod
    def from_settings(
        cls,
        *,
        allow_private: bool,
        allowed_hosts: Iterable[str],
        resolver: Resolver | None = None,
        sync_resolver: SyncResolver | None = None,
        private_advice: str = SERVER_PRIVATE_ADVICE,
    ) -> AddressGuard:
        hosts = frozenset(entry.lower() for entry in allowed_hosts)
        return cls(
            allow_private,
            hosts,
            resolver or system_resolver,
            sync_resolver or system_resolver_sync,
            private_advice,
        )

    async def check(self, url: httpx.URL) -> str:
        """The IP address to connect to for `url`, after refusing what must not be fetched."""
        target = self._target(url)
        if target.literal is not None:
            return self._choose(target, [target.literal])
        try:
            addresses = await self.resolver(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            raise _unresolvable(target.host, exc) from None
        return self._choose(target, addresses)

    def check_sync(self, url: httpx.URL) -> str:
        """`check`, blocking: for a worker thread, never the event loop."""
        target = self._target(url)
        if target.literal is not None:
            return self._choose(target, [target.literal])
        try:
            addresses = self.sync_resolver(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            raise _unresolvable(target.host, exc) from None
        return self._choose(target, addresses)

    def _target(self, url: httpx.URL) -> _Target:
        if url.scheme not in ("http", "https"):
            raise InvalidImageError(
                f"Image URL scheme {url.scheme or 'none'!r} is not allowed; use http, https or a data: URI."
            )
        try:
            host = url.host
        except ValueError as exc:  # idna.IDNAError for a malformed internationalised name
            raise InvalidImageError(
                f"Image URL has a malformed host name ({exc}); "
                "give a full http(s) URL such as https://example.com/cat.jpg."
            ) from None
        if not host:
            raise InvalidImageError("Image URL has no host; give a full http(s) URL.")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            literal: str | None = str(ipaddress.ip_address(host))
        except ValueError:
            literal = None
        return _Target(host, port, literal)

    def _choose(self, target: _Target, addresses: list[str]) -> str:
        host = target.host
        if not addresses:
            raise InvalidImageError(
                f"The image URL's host {host!r} has no address; "
                "check the host name, or send the image as a data: URI."
            )
        if self.allow_private or self._exempt(host, addresses, target.port):
            return addresses[0]
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if not is_public_address(address):
                shown = host if target.literal is not None else f"{host} ({address})"
                raise InvalidImageError(
                    f"Refusing to fetch the image URL: {shown} is a private, loopback, link-local or "
                    "otherwise non-public address. Use a public URL, upload the image or send a data: URI "
                    f"({self.private_advice})."
                )
        return addresses[0]

    def _exempt(self, host: str, addresses: list[str], port: int) -> bool:
        if not self.allowed_hosts:
            return False
        names = {host.lower(), addresses[0]}
        return any(f"{name}:{port}" in self.allowed_hosts for name in names)


def _unresolvable(host: str, exc: BaseException) -> InvalidImageError:
    return InvalidImageError(f"Cannot resolve the image URL's host {host!r} ({exc}).")

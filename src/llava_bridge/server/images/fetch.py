"""Fetching image URLs for jobs: SSRF-guarded, time-boxed and size-capped.

Each hop (the URL and every redirect) is checked by `AddressGuard`, then
connected to the address the guard approved, with the original host name in
the `Host` header and as TLS server name. Redirects are followed by hand, at
most `max_redirects`. The whole fetch must finish within `timeout` seconds and
the body may not exceed `max_bytes`.
"""

from __future__ import annotations

import asyncio
import ipaddress

import httpx

from llava_bridge.errors import InvalidImageError
from llava_bridge.server.images.ssrf import AddressGuard

__all__ = ["ImageFetcher", "parse_image_url"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class ImageFetcher:
    """Downloads image bytes for the server; every refusal is an `InvalidImageError`."""

    def __init__(
        self,
        guard: AddressGuard,
        *,
        timeout: float = 20.0,
        max_bytes: int = 20 * 1024 * 1024,
        max_redirects: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.guard = guard
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": "llava-bridge-server", "Accept": "image/*"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str) -> bytes:
        """The bytes at `url`, following redirects that pass the guard."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._fetch(url)
        except TimeoutError:
            raise InvalidImageError(
                f"Fetching the image URL took over {self.timeout:g} s; use a faster host or upload the image."
            ) from None

    async def _fetch(self, url: str) -> bytes:
        current = parse_image_url(url)
        for _ in range(self.max_redirects + 1):
            address = await self.guard.check(current)
            request = self._pinned_request(current, address)
            try:
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise InvalidImageError(
                    f"Cannot fetch the image URL's host {current.host!r} ({type(exc).__name__}: {exc})."
                ) from None
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    current = _redirect_target(current, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise InvalidImageError(
                        f"Fetching the image URL answered HTTP {response.status_code}; check that it is "
                        "public and points at an image."
                    )
                return await self._read_capped(response)
            finally:
                await response.aclose()
        raise InvalidImageError(f"The image URL redirected more than {self.max_redirects} times.")

    def _pinned_request(self, url: httpx.URL, address: str) -> httpx.Request:
        """A request for `url` that connects to `address`, keeping the original Host and TLS name."""
        host = url.host
        host_header = host if url.port is None else f"{_bracketed(host)}:{url.port}"
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        return self._client.build_request(
            "GET", url.copy_with(host=address), headers={"Host": host_header}, extensions=extensions
        )

    async def _read_capped(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise self._too_large()
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise InvalidImageError(f"The image download broke off ({type(exc).__name__}).") from None
        return b"".join(chunks)

    def _too_large(self) -> InvalidImageError:
        return InvalidImageError(
            f"The image at the URL is over the server's {self.max_bytes:,}-byte limit; send a smaller image."
        )


def parse_image_url(text: str) -> httpx.URL:
    """`text` as a URL; InvalidImageError (saying what a good one looks like) when malformed."""
    try:
        return httpx.URL(text)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InvalidImageError(
            f"Image URL is malformed ({exc}); give a full http(s) URL such as https://example.com/cat.jpg."
        ) from None


def _redirect_target(current: httpx.URL, location: str) -> httpx.URL:
    try:
        return current.join(location)
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidImageError(f"The image URL redirected to a malformed URL ({exc}).") from None


def _bracketed(host: str) -> str:
    try:
        return f"[{host}]" if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address) else host
    except ValueError:
        return host

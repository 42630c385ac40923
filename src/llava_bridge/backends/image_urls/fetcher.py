"""Fetching image URLs: SSRF-guarded, time-boxed and size-capped.

Each hop (the URL and every redirect) is checked by `AddressGuard`, then
connected to the address the guard approved, with the original host name in
the `Host` header and as TLS server name. Redirects are followed by hand, at
most `max_redirects`. The whole fetch must finish within `timeout` seconds and
the body may not exceed `max_bytes`; `load_sync` also refuses images over
`max_pixels`.

`fetch` is for the event loop (the server); `fetch_sync` and `load_sync` block, for
a backend's worker thread (its async paths call them through `asyncio.to_thread`).
A blocking read cannot be cut short from outside: there each read waits at most
what was left of `timeout` when its hop began, and the time is checked between pieces.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections.abc import Iterator

import httpx

from llava_bridge.backends.image_urls.guard import AddressGuard
from llava_bridge.errors import InvalidImageError
from llava_bridge.images import MAX_PIXELS, ImageInput

__all__ = [
    "DEFAULT_FETCH_MAX_BYTES",
    "DEFAULT_FETCH_TIMEOUT",
    "ImageFetcher",
    "checked_image",
    "parse_image_url",
]

DEFAULT_FETCH_TIMEOUT = 20.0
"""Seconds a whole fetch (every redirect and the body) may take."""
DEFAULT_FETCH_MAX_BYTES = 20 * 1024 * 1024
"""The largest image body fetched."""

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADERS = {"User-Agent": "llava-bridge", "Accept": "image/*"}


class ImageFetcher:
    """Downloads image bytes; every refusal is an `InvalidImageError`."""

    def __init__(
        self,
        guard: AddressGuard,
        *,
        timeout: float = DEFAULT_FETCH_TIMEOUT,
        max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        max_redirects: int = 5,
        max_pixels: int = MAX_PIXELS,
        transport: httpx.AsyncBaseTransport | None = None,
        sync_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.guard = guard
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.max_pixels = max_pixels
        self._transport = transport
        self._sync_transport = sync_transport
        self._client: httpx.AsyncClient | None = None
        self._sync_client: httpx.Client | None = None
        self._lock = threading.Lock()

    # -- async (the server) ------------------------------------------------------------------

    async def fetch(self, url: str) -> bytes:
        """The bytes at `url`, following redirects that pass the guard."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._fetch(url)
        except TimeoutError:
            raise self._too_slow() from None

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        self.close()

    async def _fetch(self, url: str) -> bytes:
        current = parse_image_url(url)
        client = self._async_client()
        for _ in range(self.max_redirects + 1):
            address = await self.guard.check(current)
            request = _pinned_request(client, current, address, self.timeout)
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise _unreachable(current, exc) from None
            try:
                target = _redirect_or_ok(current, response)
                if target is None:
                    return await self._read_async(response)
                current = target
            finally:
                await response.aclose()
        raise self._too_many_redirects()

    async def _read_async(self, response: httpx.Response) -> bytes:
        self._check_declared(response)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size = self._counted(size, chunk)
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise _broke_off(exc) from None
        return b"".join(chunks)

    def _async_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport, follow_redirects=False, trust_env=False, headers=_HEADERS
            )
        return self._client

    # -- blocking (a backend's worker thread) --------------------------------------------------

    def fetch_sync(self, url: str) -> bytes:
        """`fetch`, blocking: for a worker thread, never the event loop."""
        ends = time.monotonic() + self.timeout
        current = parse_image_url(url)
        client = self._blocking_client()
        try:
            for _ in range(self.max_redirects + 1):
                address = self.guard.check_sync(current)
                request = _pinned_request(client, current, address, _left(ends))
                try:
                    response = client.send(request, stream=True)
                except httpx.TimeoutException:
                    raise TimeoutError from None
                except httpx.HTTPError as exc:
                    raise _unreachable(current, exc) from None
                try:
                    target = _redirect_or_ok(current, response)
                    if target is None:
                        return self._read_sync(response, ends)
                    current = target
                finally:
                    response.close()
        except TimeoutError:
            raise self._too_slow() from None
        raise self._too_many_redirects()

    def load_sync(self, url: str) -> ImageInput:
        """The image at `url`, fetched, validated and within `max_pixels` (blocking)."""
        return checked_image(self.fetch_sync(url), self.max_pixels)

    def close(self) -> None:
        """Close the blocking client (the async one closes with `aclose`)."""
        with self._lock:
            client, self._sync_client = self._sync_client, None
        if client is not None:
            client.close()

    def _read_sync(self, response: httpx.Response, ends: float) -> bytes:
        self._check_declared(response)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in _pieces(response, ends):
                size = self._counted(size, chunk)
                chunks.append(chunk)
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            raise _broke_off(exc) from None
        return b"".join(chunks)

    def _blocking_client(self) -> httpx.Client:
        with self._lock:
            if self._sync_client is None:
                self._sync_client = httpx.Client(
                    transport=self._sync_transport, follow_redirects=False, trust_env=False, headers=_HEADERS
                )
            return self._sync_client

    # -- shared --------------------------------------------------------------------------------

    def _check_declared(self, response: httpx.Response) -> None:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large()

    def _counted(self, size: int, chunk: bytes) -> int:
        size += len(chunk)
        if size > self.max_bytes:
            raise self._too_large()
        return size

    def _too_large(self) -> InvalidImageError:
        return InvalidImageError(
            f"The image at the URL is over the {self.max_bytes:,}-byte limit; send a smaller image."
        )

    def _too_slow(self) -> InvalidImageError:
        return InvalidImageError(
            f"Fetching the image URL took over {self.timeout:g} s; use a faster host or upload the image."
        )

    def _too_many_redirects(self) -> InvalidImageError:
        return InvalidImageError(f"The image URL redirected more than {self.max_redirects} times.")


def checked_image(data: bytes, max_pixels: int) -> ImageInput:
    """`data` as a validated image no larger than `max_pixels` (InvalidImageError otherwise)."""
    return within_pixels(ImageInput.from_bytes(data), max_pixels)


def within_pixels(image: ImageInput, max_pixels: int) -> ImageInput:
    """`image` when it has at most `max_pixels` pixels; InvalidImageError otherwise."""
    size = image.size
    if size is not None and size[0] * size[1] > max_pixels:
        raise InvalidImageError(
            f"Image is {size[0]}x{size[1]} px, over the {max_pixels:,}-pixel limit; resize it."
        )
    return image


def parse_image_url(text: str) -> httpx.URL:
    """`text` as a URL; InvalidImageError (saying what a good one looks like) when malformed."""
    try:
        return httpx.URL(text)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InvalidImageError(
            f"Image URL is malformed ({exc}); give a full http(s) URL such as https://example.com/cat.jpg."
        ) from None


def _pinned_request(
    client: httpx.Client | httpx.AsyncClient, url: httpx.URL, address: str, timeout: float
) -> httpx.Request:
    """A request for `url` that connects to `address`, keeping the original Host and TLS name."""
    host = url.host
    host_header = host if url.port is None else f"{_bracketed(host)}:{url.port}"
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    return client.build_request(
        "GET",
        url.copy_with(host=address),
        headers={"Host": host_header},
        extensions=extensions,
        timeout=httpx.Timeout(timeout),
    )


def _redirect_or_ok(current: httpx.URL, response: httpx.Response) -> httpx.URL | None:
    """Where a redirect points; None for a 200; InvalidImageError for any other answer."""
    if response.status_code in _REDIRECTS and "location" in response.headers:
        try:
            return current.join(response.headers["location"])
        except (httpx.InvalidURL, ValueError) as exc:
            raise InvalidImageError(f"The image URL redirected to a malformed URL ({exc}).") from None
    if response.status_code != 200:
        raise InvalidImageError(
            f"Fetching the image URL answered HTTP {response.status_code}; check that it is "
            "public and points at an image."
        )
    return None


def _pieces(response: httpx.Response, ends: float) -> Iterator[bytes]:
    for chunk in response.iter_bytes():
        _left(ends)
        yield chunk


def _left(ends: float) -> float:
    """Seconds left before `ends`; TimeoutError once it has passed."""
    left = ends - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _unreachable(url: httpx.URL, exc: httpx.HTTPError) -> InvalidImageError:
    return InvalidImageError(f"Cannot fetch the image URL's host {url.host!r} ({type(exc).__name__}: {exc}).")


def _broke_off(exc: httpx.HTTPError) -> InvalidImageError:
    return InvalidImageError(f"The image download broke off ({type(exc).__name__}).")


def _bracketed(host: str) -> str:
    try:
        return f"[{host}]" if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address) else host
    except ValueError:
        return host

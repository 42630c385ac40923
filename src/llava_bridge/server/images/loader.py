"""Turning a job's `image_url` into a validated `ImageInput`.

Three kinds of URL: a data: URI (decoded), a URL of a file stored on this server
(read from the job store, never fetched over HTTP), and any other http(s) URL
(fetched by `ImageFetcher` with its SSRF guard). `ImageInput` validates the bytes
(real type, corruption, pixel cap); the server's own pixel cap applies on top.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import httpx

from llava_bridge.backends.image_urls.fetcher import ImageFetcher, parse_image_url, within_pixels
from llava_bridge.errors import InvalidImageError
from llava_bridge.images import ImageInput
from llava_bridge.server.jobs.protocol import JobStore, StoredFile

__all__ = ["ImageResolver"]

_FILE_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class ImageResolver:
    """Validates image URLs at submit time and loads the image at run time."""

    def __init__(self, store: JobStore, fetcher: ImageFetcher, *, files_path: str, max_pixels: int) -> None:
        self._store = store
        self._fetcher = fetcher
        self._files_path = files_path.rstrip("/") + "/"
        self._max_pixels = max_pixels

    def stored_file_id(self, image_url: str, base_url: str) -> str | None:
        """The id of this server's stored file that `image_url` names, if it names one."""
        try:
            url, base = httpx.URL(image_url.strip()), httpx.URL(base_url)
        except (httpx.InvalidURL, TypeError, ValueError):
            return None
        if url.scheme != base.scheme or url.netloc != base.netloc:
            return None
        prefix = base.path.rstrip("/") + self._files_path
        if not url.path.startswith(prefix):
            return None
        file_id = url.path[len(prefix) :].split("/", 1)[0]
        return file_id if _FILE_ID.match(file_id) else None

    async def check(self, image_url: str, file_id: str | None) -> None:
        """Refuse what can be refused before queueing: bad data URIs, bad schemes, private hosts."""
        text = image_url.strip()
        if file_id is not None:
            await self._stored(file_id)
        elif text[:5].lower() == "data:":
            await asyncio.to_thread(self._checked, ImageInput.from_data_uri, text)
        else:
            url = parse_image_url(text)
            try:
                async with asyncio.timeout(self._fetcher.timeout):
                    await self._fetcher.guard.check(url)
            except TimeoutError:
                raise InvalidImageError(
                    f"Resolving the image URL's host took over {self._fetcher.timeout:g} s; check the URL."
                ) from None

    async def load(self, image_url: str, file_id: str | None) -> ImageInput:
        """The image, fetched or decoded and validated."""
        text = image_url.strip()
        if file_id is not None:
            stored = await self._stored(file_id)
            return await asyncio.to_thread(self._checked, ImageInput.from_bytes, stored.data)
        if text[:5].lower() == "data:":
            return await asyncio.to_thread(self._checked, ImageInput.from_data_uri, text)
        data = await self._fetcher.fetch(text)
        return await asyncio.to_thread(self._checked, ImageInput.from_bytes, data)

    async def _stored(self, file_id: str) -> StoredFile:
        stored = await self._store.get_file(file_id, now=time.time())
        if stored is None:
            raise InvalidImageError(
                f"The uploaded file {file_id!r} is not on this server (never uploaded, or expired); "
                "upload it again."
            )
        return stored

    def _checked(self, make: Callable[..., ImageInput], value: str | bytes) -> ImageInput:
        return within_pixels(make(value), self._max_pixels)

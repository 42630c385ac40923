"""Getting an image to fal: by URL, inline as a data URI, or uploaded once to fal storage.

- An http(s) URL is passed as is.
- Bytes (from bytes, paths, PIL images) are shrunk by the `ResizePolicy`. Then:
  at most `ALWAYS_INLINE` bytes (a thumbnail): always inline as a data URI; at most
  `inline_threshold` bytes: inline the first time, uploaded the second time it is
  seen (an image asked about again is likely asked about more); larger: uploaded
  at once. An upload is a CDN token (``POST {rest}/storage/auth/token?storage_type=fal-cdn-v3``,
  cached until it expires), then ``POST {cdn}/files/upload``; if that fails,
  ``POST {rest}/storage/upload/initiate`` and a PUT of the bytes to the URL it returns.
- A bounded cache keyed by the image's content hash remembers uploaded URLs (and
  thumbnails' data URIs), so each distinct image is uploaded once per backend. Calls
  that need the same image while it is being uploaded wait for that upload (checking
  every `UPLOAD_WAIT_STEP` seconds) instead of sending it again.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from llava_bridge.backends._transport.effects import Compute, Effect, HttpRequest, HttpResponse, Sleep
from llava_bridge.backends._transport.flows import (
    Deadline,
    DeadlineHit,
    call,
    raise_for_status,
    unexpected_answer,
)
from llava_bridge.backends.fal.credentials import origin_of
from llava_bridge.backends.fal.protocol import (
    FILE_NAME_HEADER,
    FILES_UPLOAD_PATH,
    STORAGE_TOKEN_PATH,
    UPLOAD_INITIATE_PATH,
)
from llava_bridge.backends.fal.settings import FalConfig, is_fal_host
from llava_bridge.errors import APIConnectionError, APIStatusError, ServerUnreachableError
from llava_bridge.images import ImageInput, ResizePolicy
from llava_bridge.retry import Phase

__all__ = ["UPLOAD_CACHE_SIZE", "StorageState", "image_url_flow", "placeholder_image"]

logger = logging.getLogger("llava_bridge.fal")

UPLOAD_CACHE_SIZE = 256
"""Distinct images whose data URI or uploaded URL a backend remembers."""
ALWAYS_INLINE = 8 * 1024
"""Encoded images this small are always sent inline: an upload would cost more than it saves."""
_SEEN = ""
"""Cache value of an image sent inline once (upload it if it comes back)."""
TOKEN_MARGIN = 60.0
"""Seconds before a CDN token's expiry at which a new one is fetched."""
TOKEN_FALLBACK_LIFETIME = 600.0
"""How long a CDN token is used when its expiry cannot be read."""
UPLOAD_TIMEOUT = 120.0
UPLOAD_WAIT_STEP = 0.01
"""How often a call waiting for another call's upload of the same image looks again."""

_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}


@cache
def placeholder_image() -> ImageInput:
    """A small neutral grey PNG, sent with text-only requests (the endpoint needs an image)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, format="PNG")
    return ImageInput.from_bytes(buffer.getvalue())


@dataclass
class _CdnToken:
    header: str
    base_url: str | None
    refresh_at: float


class StorageState:
    """Per-backend memory: image hash -> URL sent, and the CDN token. Thread-safe."""

    def __init__(self, max_entries: int = UPLOAD_CACHE_SIZE) -> None:
        self._urls: OrderedDict[str, str] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._token: _CdnToken | None = None
        self._uploading: set[str] = set()
        self.uploads = 0
        """How many uploads this backend made (for tests and benchmarks)."""

    def get(self, key: str) -> str | None:
        """The URL or data URI remembered for `key`."""
        with self._lock:
            url = self._urls.get(key)
            if url is not None:
                self._urls.move_to_end(key)
            return url or None

    def first_sight(self, key: str) -> bool:
        """True the first time `key` is offered (and remember it); False after."""
        with self._lock:
            if key in self._urls:
                self._urls.move_to_end(key)
                return False
        self.put(key, _SEEN)
        return True

    def put(self, key: str, url: str) -> None:
        with self._lock:
            self._urls[key] = url
            self._urls.move_to_end(key)
            while len(self._urls) > self._max_entries:
                self._urls.popitem(last=False)

    def claim_upload(self, key: str) -> bool:
        """True when the caller should upload `key`; False while another call is uploading it."""
        with self._lock:
            if key in self._uploading:
                return False
            self._uploading.add(key)
            return True

    def end_upload(self, key: str) -> None:
        with self._lock:
            self._uploading.discard(key)

    def token(self) -> _CdnToken | None:
        with self._lock:
            token = self._token
            return token if token is not None and time.monotonic() < token.refresh_at else None

    def set_token(self, token: _CdnToken | None) -> None:
        with self._lock:
            self._token = token


def _encode(image: ImageInput, policy: ResizePolicy | None) -> tuple[bytes, str]:
    shrunk = image.prepared(policy)  # upright JPEG or PNG; policy None shrinks nothing
    assert shrunk.data is not None and shrunk.mime_type is not None
    return shrunk.data, shrunk.mime_type


def image_url_flow(
    config: FalConfig,
    deadline: Deadline,
    state: StorageState,
    image: ImageInput,
    *,
    policy: ResizePolicy | None,
    inline_threshold: int,
) -> Generator[Effect, Any, str]:
    """The `image_url` to send for `image`."""
    if image.url is not None:
        return image.url
    known = state.get(image.sha256)
    if known is not None:
        return known
    data, mime = yield Compute(lambda: _encode(image, policy))
    size = len(data)
    if size <= min(ALWAYS_INLINE, inline_threshold) or (
        size <= inline_threshold and state.first_sight(image.sha256)
    ):
        uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        if size <= ALWAYS_INLINE:
            state.put(image.sha256, uri)
        return uri
    while not state.claim_upload(image.sha256):  # another call is uploading it: wait for its URL
        if deadline.expired():
            raise DeadlineHit
        yield Sleep(deadline.bound(UPLOAD_WAIT_STEP) or 0.0)
        known = state.get(image.sha256)
        if known is not None:
            return known
    try:
        # An upload that ended while this call was encoding or waiting already stored the URL.
        known = state.get(image.sha256)
        if known is not None:
            return known
        url = yield from _upload(config, deadline, state, data, mime, f"{image.sha256[:16]}")
        state.put(image.sha256, url)
    finally:
        state.end_upload(image.sha256)
    return url


def _upload(
    config: FalConfig, deadline: Deadline, state: StorageState, data: bytes, mime: str, stem: str
) -> Generator[Effect, Any, str]:
    name = f"{stem}.{_EXTENSIONS.get(mime, 'bin')}"
    try:
        url = yield from _upload_cdn(config, deadline, state, data, mime, name)
    except ServerUnreachableError as exc:
        state.set_token(None)
        if origin_of(exc.url) == origin_of(config.rest_url):
            raise  # the fallback would call the same dead host
        failed: Exception = exc
    except (APIStatusError, APIConnectionError) as exc:
        state.set_token(None)
        failed = exc
    else:
        state.uploads += 1
        return url
    # Outside the except blocks: a failing fallback raises its own error, not a chain of two,
    # and no warning first (a refused key would otherwise print a warning and then the error).
    logger.debug("CDN upload failed (%s); trying the storage upload fallback", type(failed).__name__)
    url = yield from _upload_initiate(config, deadline, data, mime, name)
    logger.warning("CDN upload failed (%s); the storage upload fallback was used", type(failed).__name__)
    state.uploads += 1
    return url


def _cdn_token(
    config: FalConfig, deadline: Deadline, state: StorageState
) -> Generator[Effect, Any, _CdnToken]:
    token = state.token()
    if token is not None:
        return token
    url = config.rest_url + STORAGE_TOKEN_PATH
    request = HttpRequest(
        "POST",
        url,
        headers=config.headers(url),
        params={"storage_type": "fal-cdn-v3"},
        json_body={},
        read_timeout=config.read_timeout,
        connect_timeout=config.connect_timeout,
        label="storage token",
    )
    response, data = yield from call(config, deadline, request)
    raise_for_status(response)
    if not isinstance(data, dict) or not isinstance(data.get("token"), str):
        raise unexpected_answer(response, "The storage token answer had no token")
    token = _CdnToken(
        header=f"{data.get('token_type') or 'Bearer'} {data['token']}",
        base_url=data.get("base_url") if isinstance(data.get("base_url"), str) else None,
        refresh_at=time.monotonic() + _lifetime(data.get("expires_at")),
    )
    state.set_token(token)
    return token


def _lifetime(expires_at: Any) -> float:
    """Seconds to keep using a token, from its ISO `expires_at` (minus a margin)."""
    if not isinstance(expires_at, str):
        return TOKEN_FALLBACK_LIFETIME
    try:
        moment = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    except ValueError:
        return TOKEN_FALLBACK_LIFETIME
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds() - TOKEN_MARGIN)


def _upload_cdn(
    config: FalConfig, deadline: Deadline, state: StorageState, data: bytes, mime: str, name: str
) -> Generator[Effect, Any, str]:
    token = yield from _cdn_token(config, deadline, state)
    # The token's own base_url is used only when it is one of fal's hosts.
    base = token.base_url if token.base_url and is_fal_host(token.base_url) else config.cdn_url
    url = base.rstrip("/") + FILES_UPLOAD_PATH
    request = HttpRequest(
        "POST",
        url,
        headers={
            "User-Agent": config.user_agent,
            "Authorization": token.header,
            "Content-Type": mime,
            FILE_NAME_HEADER: name,
        },
        content=data,
        read_timeout=UPLOAD_TIMEOUT,
        connect_timeout=config.connect_timeout,
        label="CDN upload",
    )
    response, body = yield from call(config, deadline, request)
    raise_for_status(response)
    return _http_url(response, body, "access_url", "CDN upload")


def _upload_initiate(
    config: FalConfig, deadline: Deadline, data: bytes, mime: str, name: str
) -> Generator[Effect, Any, str]:
    url = config.rest_url + UPLOAD_INITIATE_PATH
    request = HttpRequest(
        "POST",
        url,
        headers=config.headers(url),
        params={"storage_type": "gcs"},
        json_body={"file_name": name, "content_type": mime},
        read_timeout=config.read_timeout,
        connect_timeout=config.connect_timeout,
        label="storage upload initiate",
    )
    response, body = yield from call(config, deadline, request)
    raise_for_status(response)
    upload_url = _http_url(response, body, "upload_url", "storage upload initiate")
    file_url = _http_url(response, body, "file_url", "storage upload initiate")
    put = HttpRequest(
        "PUT",
        upload_url,  # a signed URL: no key goes with it
        headers={"User-Agent": config.user_agent, "Content-Type": mime},
        content=data,
        read_timeout=UPLOAD_TIMEOUT,
        connect_timeout=config.connect_timeout,
        label="storage upload",
        phase=Phase.READ,
    )
    response, _ = yield from call(config, deadline, put, expect_json=False)
    raise_for_status(response)
    return file_url


def _http_url(response: HttpResponse, body: Any, field: str, what: str) -> str:
    value = body.get(field) if isinstance(body, dict) else None
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise unexpected_answer(response, f"The {what} answer had no usable {field!r}")
    return value

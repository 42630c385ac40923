"""Where and how FalBackend calls fal: hosts, key, headers and retry settings."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from llava_bridge.backends.fal.protocol import (
    QUEUE_PRIORITY_HEADER,
    REQUEST_TIMEOUT_HEADER,
    RUNNER_HINT_HEADER,
)

if TYPE_CHECKING:
    from llava_bridge.backends.fal.credentials import KeyRule

__all__ = [
    "FAL_DOMAINS",
    "FalConfig",
    "is_fal_host",
    "origin_of",
    "request_name",
    "server_name",
    "shown_origin",
]

FAL_DOMAINS = ("fal.run", "fal.ai", "fal.media", "falrun.com")


def is_fal_host(url: str) -> bool:
    """Whether `url` points at one of fal's own domains."""
    host = (urlsplit(url).hostname or "").lower()
    return any(host == domain or host.endswith("." + domain) for domain in FAL_DOMAINS)


def origin_of(url: str) -> str:
    """``scheme://host:port`` of `url` (default ports filled in), for comparing hosts."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def shown_origin(url: str) -> str:
    """`url`'s scheme, host and port as the user wrote them (no path, no credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def server_name(url: str) -> str:
    """How messages name the server at `url`: ``fal`` for fal's hosts, else ``the server at
    <origin>`` (a `llava-bridge serve` or another fal-compatible server is not fal)."""
    return "fal" if is_fal_host(url) else f"the server at {shown_origin(url)}"


def request_name(url: str, request_id: str) -> str:
    """How messages name job `request_id` queued at `url`: ``fal request <id>`` on fal's
    hosts, else ``request <id> to <origin>``."""
    if is_fal_host(url):
        return f"fal request {request_id}"
    return f"request {request_id} to {shown_origin(url)}"


@dataclass(frozen=True)
class FalConfig:
    """Everything a flow needs to know about where and how to call fal."""

    queue_url: str
    run_url: str
    rest_url: str
    cdn_url: str
    keys: KeyRule | None = None
    """Which host gets which key (credentials.py); None: no key anywhere."""
    user_agent: str = "llava-bridge"
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    start_timeout: float | None = None
    priority: str | None = None
    hint: str | None = None
    webhook_url: str | None = None
    max_attempts: int = 5
    poll_interval: float = 0.25
    stream_idle_timeout: float = 15.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    run_timeout: float | None = 600.0
    use_status_stream: bool = True
    rng: random.Random = field(default_factory=random.Random)
    idempotent_hosts: set[str] = field(default_factory=set)
    """Queue URLs seen to adopt a proposed request id (learned; shared by copies of the config)."""
    submit_grace: float = 5.0
    """Seconds past the caller's deadline a submit may take to read its request id, so the
    job can be cancelled instead of left running unseen."""

    def __repr__(self) -> str:  # never show the key
        return f"FalConfig(queue_url={self.queue_url!r}, run_url={self.run_url!r})"

    def headers(self, url: str) -> dict[str, str]:
        """Headers for any call to `url`: user agent and, where it belongs, the key."""
        headers = {"User-Agent": self.user_agent}
        authorization = self.keys.authorization(url) if self.keys is not None else None
        if authorization is not None:
            headers["Authorization"] = authorization
        return headers

    def job_headers(self, url: str) -> dict[str, str]:
        """Headers for a call that starts work (submit, run, stream): the options too."""
        headers = self.headers(url)
        if self.start_timeout is not None:
            headers[REQUEST_TIMEOUT_HEADER] = f"{self.start_timeout:g}"
        if self.priority is not None:
            headers[QUEUE_PRIORITY_HEADER] = self.priority
        if self.hint is not None:
            headers[RUNNER_HINT_HEADER] = self.hint
        headers.update(self.extra_headers)
        return headers

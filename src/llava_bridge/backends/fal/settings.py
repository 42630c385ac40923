"""Where and how FalBackend calls fal: hosts, key, headers and retry settings."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from llava_bridge.backends.fal.credentials import KeyRule

__all__ = ["FAL_DOMAINS", "FalConfig", "is_fal_host"]

FAL_DOMAINS = ("fal.run", "fal.ai", "fal.media", "falrun.com")


def is_fal_host(url: str) -> bool:
    """Whether `url` points at one of fal's own domains."""
    host = (urlsplit(url).hostname or "").lower()
    return any(host == domain or host.endswith("." + domain) for domain in FAL_DOMAINS)


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
            headers["X-Fal-Request-Timeout"] = f"{self.start_timeout:g}"
        if self.priority is not None:
            headers["X-Fal-Queue-Priority"] = self.priority
        if self.hint is not None:
            headers["X-Fal-Runner-Hint"] = self.hint
        headers.update(self.extra_headers)
        return headers

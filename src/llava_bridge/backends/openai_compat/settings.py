"""Where and how `OpenAICompatBackend` calls its server: what its flows read."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from llava_bridge._version import __version__
from llava_bridge.backends._transport.effects import HttpRequest
from llava_bridge.backends.image_urls.fetcher import ImageFetcher
from llava_bridge.backends.openai_compat.stop_support import StopSupport
from llava_bridge.images import ResizePolicy
from llava_bridge.prompts import CONTEXT_WINDOW
from llava_bridge.retry import Phase

__all__ = ["OpenAISettings"]


@dataclass(frozen=True)
class OpenAISettings:
    """A backend's settings, as its IO-free flows see them (a `CallSettings` for `call`)."""

    url: str
    """The full `.../v1/chat/completions` URL."""
    model: str
    api_key: SecretStr | None = None
    connect_timeout: float | None = 10.0
    read_timeout: float | None = 120.0
    """Per read: how long the server may stay silent (a busy GPU can take a while)."""
    total_timeout: float | None = None
    """A wall clock over a whole call, body and stream reads included (None: no limit)."""
    max_attempts: int = 5
    context_window: int = CONTEXT_WINDOW
    resize: ResizePolicy | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    stop_support: StopSupport = field(default_factory=StopSupport)
    """Whether requests carry `stop` (learned per backend when `send_stop` is None)."""
    fetcher: ImageFetcher | None = None
    """Fetches URL images on the client (sent as data URIs); None: URLs go to the server."""
    rng: random.Random = field(default_factory=random.Random)
    submit_grace: float = 0.0
    """No grace past a deadline: a completion has no job id to cancel."""

    def __repr__(self) -> str:  # never show the key
        return f"OpenAISettings(url={self.url!r}, model={self.model!r})"

    def post(self, payload: Mapping[str, Any]) -> HttpRequest:
        """The POST of one chat completion: it creates work, so it is retried only when not sent."""
        headers = {"Accept": "application/json", "User-Agent": f"llava-bridge/{__version__}"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        return HttpRequest(
            "POST",
            self.url,
            headers=headers,
            json_body=payload,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            label="chat completion",
            phase=Phase.SUBMIT,
        )

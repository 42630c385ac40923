"""`OpenAICompatBackend`: LLaVA behind an OpenAI-compatible server.

One client for vLLM, llama.cpp's `llama-server`, LM Studio, LMDeploy, SGLang and
Ollama's `/v1`: `POST {base_url}/v1/chat/completions` with the conversation as
native system/user/assistant messages, the image as a content part on its turn
(a base64 data URI; a URL image is passed as its URL, which Ollama refuses),
`stop: ["<|eot_id|>", ...]`, and SSE for streaming. Stop strings are applied on
the client too, in case a server lets `<|eot_id|>` through as text, or is not told
them: `transformers serve` fails on `stop` with a LLaVA processor, so by default a
server error on a request with `stop` is tried once without it, and the backend
leaves it out from then on (`send_stop=`).

The wire format is in `wire`, the IO-free flows in `flows`; this class picks the
transport and drives them, sync or async. The POST creates work, so it is re-sent
only when the server cannot have run it (connection refused, 408/409/429,
502/503/504 from a proxy, a kept-alive connection the server had closed), by the core
policy in `retry.py`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
from pydantic import SecretStr

from llava_bridge.backends._transport.choice import Transports
from llava_bridge.backends._transport.drivers import iterate_async, iterate_sync, run_async, run_sync
from llava_bridge.backends._transport.flows import finite_positive
from llava_bridge.backends.base import Closeable
from llava_bridge.backends.image_urls.fetcher import ImageFetcher
from llava_bridge.backends.image_urls.options import fetcher_for
from llava_bridge.backends.openai_compat.flows import generate_flow, stream_flow
from llava_bridge.backends.openai_compat.settings import OpenAISettings
from llava_bridge.backends.openai_compat.stop_support import StopSupport
from llava_bridge.backends.openai_compat.wire import DEFAULT_OPENAI_MODEL, chat_completions_url
from llava_bridge.errors import ConfigurationError
from llava_bridge.images import ResizePolicy
from llava_bridge.prompts import CONTEXT_WINDOW, estimate_tokens
from llava_bridge.retry import MAX_ATTEMPTS
from llava_bridge.types import VisionChunk, VisionRequest, VisionResult

__all__ = ["DEFAULT_OPENAI_MODEL", "DEFAULT_TIMEOUT", "OpenAICompatBackend", "chat_completions_url"]

DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
"""A long read timeout: a busy local GPU can take a while to start answering."""
_DEFAULT_RESIZE = ResizePolicy()


def _timeouts(timeout: float | httpx.Timeout | None) -> tuple[float | None, float | None]:
    """(connect, read) seconds from `timeout=`: seconds for both, or an `httpx.Timeout`."""
    if isinstance(timeout, httpx.Timeout):
        return timeout.connect, timeout.read
    if timeout is None:
        return None, None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigurationError(
            f"timeout must be a positive number of seconds or an httpx.Timeout, not {timeout!r}."
        )
    return float(timeout), float(timeout)


class OpenAICompatBackend(Closeable):
    """LLaVA served by vLLM, llama.cpp, LM Studio, SGLang, LMDeploy, Ollama or
    `transformers serve`, over HTTP.

    Token counts are the server's when it reports usage, else estimates.
    """

    exact_token_counts = False

    def __init__(
        self,
        base_url: str,
        model: str = DEFAULT_OPENAI_MODEL,
        *,
        api_key: str | SecretStr | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        total_timeout: float | None = None,
        max_retries: int = MAX_ATTEMPTS - 1,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        context_window: int = CONTEXT_WINDOW,
        resize: ResizePolicy | None = _DEFAULT_RESIZE,
        extra_body: Mapping[str, Any] | None = None,
        send_stop: bool | None = None,
        fetch_urls: bool | ImageFetcher = False,
        allow_private_urls: bool = False,
    ) -> None:
        """A client of one OpenAI-compatible server.

        Args:
            base_url: The server root (`http://localhost:8000`) or its `/v1`.
            model: The `model` field of each request (a request's own `model` wins):
                Ollama's name, vLLM's Hub id; llama.cpp ignores it.
            api_key: Sent as `Authorization: Bearer ...` (vLLM `--api-key`,
                llama-server `--api-key`); never shown in reprs or errors.
            timeout: Connecting and each read, in seconds, or an `httpx.Timeout`. A busy
                GPU can be silent for a while before its first token.
            total_timeout: A wall clock over a whole call in seconds, body and stream
                reads included; past it `DeadlineExceededError` is raised. None: no limit.
            max_retries: Re-sends of a request the server cannot have run (connection
                refused, 429, a proxy's 502/503/504), with backoff.
            http_client: An `httpx.Client` to send through (used as given, left open);
                default: the package's own HTTP/1.1 pool (httpx behind a proxy variable).
            async_http_client: The same, for `agenerate`/`astream`.
            context_window: Tokens the served model holds; older turns are trimmed to fit.
            resize: How images are downscaled before sending (None: sent as they are).
            extra_body: Fields merged into every request body, e.g.
                `{"stop_token_ids": [128009]}` for vLLM.
            send_stop: Whether requests carry the `stop` field. None (default): yes, but
                after an unexplained HTTP 500 (no error type, or one naming `stop`) or a
                stream that opens with a bare error, on a request with `stop`, try once
                without it and, when that works, leave it out from then on (one warning).
                False: never (for `transformers serve`). True: always. Stop strings are
                cut on the client in every case.
            fetch_urls: False (default): a URL image is sent to the server as its URL (vLLM
                fetches it; Ollama refuses it). True: fetch it here, through the SSRF guard
                (private and loopback addresses refused, 20 s, 20 MB, the pixel cap), and
                send it as a data URI. An `ImageFetcher` sets its own guard and limits.
            allow_private_urls: With `fetch_urls=True`, fetch from private and loopback
                addresses too (an image server on your own network).
        """
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be a non-negative integer, not {max_retries!r}.")
        if send_stop not in (None, True, False):
            raise ConfigurationError(f"send_stop must be True, False or None, not {send_stop!r}.")
        connect_timeout, read_timeout = _timeouts(timeout)
        self._settings = OpenAISettings(
            url=chat_completions_url(base_url),
            model=model,
            api_key=api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            total_timeout=finite_positive("total_timeout", total_timeout),
            max_attempts=max_retries + 1,
            context_window=context_window,
            resize=resize,
            extra_body=dict(extra_body or {}),
            stop_support=StopSupport(send_stop),
            fetcher=fetcher_for(fetch_urls, allow_private_urls),
        )
        self._own_fetcher = not isinstance(fetch_urls, ImageFetcher)
        self._transports = Transports(http_client, async_http_client)

    @property
    def url(self) -> str:
        """The chat-completions URL every request goes to."""
        return self._settings.url

    @property
    def model_name(self) -> str:
        return self._settings.model

    @property
    def context_window(self) -> int:
        return self._settings.context_window

    def count_tokens(self, text: str) -> int:
        """An estimate (the server's tokenizer is not available here)."""
        return estimate_tokens(text)

    def generate(self, request: VisionRequest) -> VisionResult:
        """One chat completion, blocking."""
        return run_sync(generate_flow(self._settings, request), self._transports.sync())

    async def agenerate(self, request: VisionRequest) -> VisionResult:
        """Async `generate`."""
        return await run_async(generate_flow(self._settings, request), self._transports.for_running_loop())

    def stream(self, request: VisionRequest) -> Iterator[VisionChunk]:
        """Yield the new text as it arrives; the last chunk carries the whole result."""
        yield from iterate_sync(stream_flow(self._settings, request), self._transports.sync())

    async def astream(self, request: VisionRequest) -> AsyncIterator[VisionChunk]:
        """Async `stream`."""
        flow = stream_flow(self._settings, request)
        async for chunk in iterate_async(flow, self._transports.for_running_loop()):
            yield chunk

    def close(self) -> None:
        """Close the connections this backend made (not a client or fetcher you passed in)."""
        self._transports.close()
        if self._settings.fetcher is not None and self._own_fetcher:
            self._settings.fetcher.close()

    async def aclose(self) -> None:
        """Close this backend's connections for the running event loop, and the sync ones."""
        await self._transports.aclose()
        self.close()

    def __repr__(self) -> str:
        key = ", api_key=SecretStr('**********')" if self._settings.api_key is not None else ""
        return f"OpenAICompatBackend(url={self.url!r}, model={self.model_name!r}{key})"

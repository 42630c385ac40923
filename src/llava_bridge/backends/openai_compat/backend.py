"""`OpenAICompatBackend`: LLaVA behind an OpenAI-compatible server.

One client for vLLM, llama.cpp's `llama-server`, LM Studio, LMDeploy, SGLang and
Ollama's `/v1`: `POST {base_url}/v1/chat/completions` with the conversation as
native system/user/assistant messages, the image as a content part on its turn
(a base64 data URI; a URL image is passed as its URL, which Ollama refuses),
`stop: ["<|eot_id|>", ...]`, and SSE for streaming. Stop strings are applied on
the client too, in case a server lets `<|eot_id|>` through as text.

The POST creates work, so it is retried only when the server cannot have run it
(connection refused, 408/409/429, 502/503/504 from a proxy), by the core policy
in `retry.py`. The request building, response parsing and retry decisions are
IO-free functions; `generate`/`stream` and `agenerate`/`astream` are thin sync
and async shells around them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from llava_bridge.backends._transport.sse import SseDecoder
from llava_bridge.backends.base import Closeable
from llava_bridge.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    status_error,
)
from llava_bridge.images import ResizePolicy
from llava_bridge.prompts import CONTEXT_WINDOW, TokenBudget, estimate_tokens, fit_to_context
from llava_bridge.retry import MAX_ATTEMPTS, Failure, Phase, backoff_delay, retry_delay, should_retry_failure
from llava_bridge.retry import should_retry_status as _should_retry_status
from llava_bridge.stops import LLAMA3_STOP_STRINGS, StopScanner, cut_at_stop
from llava_bridge.types import FinishReason, Usage, VisionChunk, VisionRequest, VisionResult

__all__ = ["DEFAULT_OPENAI_MODEL", "OpenAICompatBackend", "chat_completions_url"]

DEFAULT_OPENAI_MODEL = "llava-llama3"
"""Ollama's name for this model; vLLM uses the Hub id, llama.cpp ignores the field."""
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
"""A long read timeout: a busy local GPU can take a while to start answering."""
_DEFAULT_RESIZE = ResizePolicy()
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def chat_completions_url(base_url: str) -> str:
    """`.../v1/chat/completions` from a server root (`http://host:8000`) or its `/v1`."""
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url must start with http:// or https://, not {base_url!r}.")
    if url.endswith("/chat/completions"):
        return url
    return f"{url}/chat/completions" if url.endswith("/v1") else f"{url}/v1/chat/completions"


# -- IO-free core ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """One prepared chat completion: what to send and what is known before sending."""

    payload: dict[str, Any]
    request: VisionRequest
    budget: TokenBudget
    model: str
    started: float = field(default_factory=time.perf_counter)

    @property
    def stops(self) -> tuple[str, ...]:
        return (*LLAMA3_STOP_STRINGS, *self.request.stop)


def build_call(
    request: VisionRequest,
    *,
    model: str,
    stream: bool,
    context_window: int,
    resize: ResizePolicy | None,
    extra_body: Mapping[str, Any],
) -> _Call:
    """The JSON body for `/v1/chat/completions`, after trimming the conversation to fit."""
    request, budget = fit_to_context(request, context_window=context_window)
    image_index = request.image_index
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        content: Any = message.content
        if index == image_index and request.image is not None:
            image = request.image.resized(resize) if resize is not None else request.image
            url = image.url if image.is_url else image.to_data_uri()
            content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": content}]
        messages.append({"role": message.role, "content": content})
    name = request.model or model
    payload: dict[str, Any] = {
        "model": name,
        "messages": messages,
        "max_tokens": request.max_new_tokens,
        "stop": ["<|eot_id|>", *request.stop],
        "stream": stream,
    }
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    if stream:
        payload["stream_options"] = {"include_usage": True}
    payload.update(extra_body)
    payload.update(request.extra)
    return _Call(payload, request, budget, name)


def _finish_reason(raw: Any, stopped_here: bool) -> FinishReason | None:
    if stopped_here:
        return "stop"
    if raw == "length":
        return "length"
    return "stop" if isinstance(raw, str) and raw else None


def _usage(raw: Any, call: _Call, text: str) -> Usage:
    if isinstance(raw, Mapping):
        prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            return Usage(prompt_tokens=prompt, completion_tokens=completion)
    return Usage(
        prompt_tokens=call.budget.prompt_tokens, completion_tokens=estimate_tokens(text), estimated=True
    )


def _malformed(url: str, what: str) -> APIStatusError:
    return APIStatusError(
        f"The server at {url} answered, but not with an OpenAI chat completion ({what}). "
        "Is base_url the root of an OpenAI-compatible server (vLLM, llama.cpp, LM Studio, Ollama)?",
        status_code=200,
    )


def parse_completion(body: Any, call: _Call, url: str) -> VisionResult:
    """A VisionResult from a non-streamed chat completion body."""
    try:
        choice = body["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise _malformed(url, "no choices[0].message") from None
    if not isinstance(text, str):
        raise _malformed(url, "message.content is not text")
    text, found = cut_at_stop(text, call.stops)
    return VisionResult(
        text=text,
        usage=_usage(body.get("usage"), call, text),
        finish_reason=_finish_reason(choice.get("finish_reason"), found),
        model=body.get("model") or call.model,
        request_id=body.get("id"),
        metrics={"inference_time": time.perf_counter() - call.started},
    )


class _StreamAssembler:
    """Turns streamed chunk JSON into text deltas (cut at stops) and the final result."""

    def __init__(self, call: _Call, url: str) -> None:
        self._call = call
        self._url = url
        self._scanner = StopScanner(call.stops)
        self._parts: list[str] = []
        self._finish: Any = None
        self._usage: Any = None
        self._id: str | None = None
        self._model: str | None = None
        self._events = SseDecoder()
        self._saw_done = False
        self.first_token_at: float | None = None

    @property
    def done(self) -> bool:
        """`[DONE]` arrived or a stop string cut the answer: read no further."""
        return self._saw_done or self._scanner.stopped

    def feed_line(self, line: str) -> str:
        """The text safe to show after one line of the SSE body ("" while an event is incomplete)."""
        event = self._events.feed(line)
        if event is None or self.done:
            return ""
        if event.data == "[DONE]":
            self._saw_done = True
            return ""
        return self.feed(event.data)

    def check_complete(self) -> None:
        """Raise when the stream ended with no `[DONE]`, no finish_reason and no stop."""
        if not (self.done or self._finish):
            raise APIConnectionError(
                f"The stream from {self._url} ended before the answer was complete; try again."
            )

    def feed(self, data: str) -> str:
        """The text safe to show from one SSE `data:` payload."""
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise _malformed(self._url, f"a stream event is not JSON: {data[:80]!r}") from None
        if not isinstance(chunk, Mapping):
            raise _malformed(self._url, "a stream event is not an object")
        if "error" in chunk:
            raise _stream_error(chunk["error"])
        self._id = self._id or chunk.get("id")
        self._model = self._model or chunk.get("model")
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        delta = ""
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str) and content:
                delta += content
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        if delta and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        safe = self._scanner.feed(delta)
        self._parts.append(safe)
        return safe

    def finish(self) -> VisionChunk:
        """The last chunk: any held-back text, and the whole result."""
        tail = self._scanner.flush()
        self._parts.append(tail)
        text = "".join(self._parts)
        metrics = {"inference_time": time.perf_counter() - self._call.started}
        if self.first_token_at is not None:
            metrics["time_to_first_token"] = self.first_token_at - self._call.started
        result = VisionResult(
            text=text,
            usage=_usage(self._usage, self._call, text),
            finish_reason=_finish_reason(self._finish, self._scanner.stopped),
            model=self._model or self._call.model,
            request_id=self._id,
            metrics=metrics,
        )
        return VisionChunk(delta=tail, result=result)


def _error_fields(error: Any) -> tuple[str, str | None]:
    """(message, type) from OpenAI-style `{"error": {...}}`, vLLM's `{"message": ...}` or text."""
    if isinstance(error, Mapping):
        inner = error.get("error", error)
        if isinstance(inner, Mapping):
            message = inner.get("message") or inner.get("detail") or json.dumps(inner)
            kind = inner.get("type") or inner.get("code")
            return str(message), str(kind) if kind is not None else None
        return str(inner), None
    return str(error), None


def _stream_error(error: Any) -> APIStatusError:
    message, kind = _error_fields(error)
    code = error.get("code") if isinstance(error, Mapping) else None
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    return status_error(status, {"detail": message}, error_type=kind)


def error_from_response(status: int, headers: Mapping[str, str], content: bytes) -> APIStatusError:
    """The typed error for an HTTP error answer, with the server's own message."""
    try:
        body: Any = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = content.decode("utf-8", "replace").strip()[:500]
    message, kind = _error_fields(body)
    request_id = headers.get("x-request-id")
    if status == 401:
        return AuthenticationError(
            f"HTTP 401: {message}\nThe server did not accept the API key: pass api_key= with the key the "
            "server was started with (vLLM --api-key, llama-server --api-key).",
            status_code=401,
            request_id=request_id,
            error_type=kind,
            body=body,
        )
    error = status_error(status, {"detail": message}, request_id=request_id, error_type=kind)
    error.body = body
    return error


def status_retry_delay(
    status: int, headers: Mapping[str, str], attempt: int, max_attempts: int
) -> float | None:
    """Seconds to wait before re-sending after an error status; None to give up."""
    if attempt >= max_attempts or not _should_retry_status(status, headers, Phase.SUBMIT):
        return None
    return retry_delay(attempt, headers)


def failure_retry_delay(exc: httpx.TransportError, attempt: int, max_attempts: int) -> float | None:
    """Seconds to wait before re-sending after a transport failure; None to give up."""
    failure = Failure.NOT_SENT if isinstance(exc, _NOT_SENT) else Failure.AFTER_SEND
    if attempt >= max_attempts or not should_retry_failure(failure, Phase.SUBMIT):
        return None
    return backoff_delay(attempt)


def connection_error(exc: httpx.TransportError, url: str) -> APIConnectionError:
    """The typed error for a transport failure that will not be retried."""
    if isinstance(exc, _NOT_SENT):
        what = f"Could not connect to {url} ({type(exc).__name__}); is the server running?"
    else:
        what = (
            f"The connection to {url} failed after the request was sent ({type(exc).__name__}); "
            "it was not re-sent, as the server may be running it."
        )
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"{what} Raise timeout= if the model needs longer.")
    return APIConnectionError(what)


# -- the backend: thin sync and async shells ---------------------------------------------------


class OpenAICompatBackend(Closeable):
    """LLaVA served by vLLM, llama.cpp, LM Studio, SGLang, LMDeploy or Ollama, over HTTP.

    `base_url` is the server root (`http://localhost:8000`) or its `/v1`. Token
    counts are estimates until the server reports usage. `extra_body` is merged
    into every request body (e.g. `{"stop_token_ids": [128009]}` for vLLM).
    """

    exact_token_counts = False

    def __init__(
        self,
        base_url: str,
        model: str = DEFAULT_OPENAI_MODEL,
        *,
        api_key: str | SecretStr | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = MAX_ATTEMPTS - 1,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        context_window: int = CONTEXT_WINDOW,
        resize: ResizePolicy | None = _DEFAULT_RESIZE,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be a non-negative integer, not {max_retries!r}.")
        self.url = chat_completions_url(base_url)
        self.model_name = model
        self.context_window = context_window
        self._api_key = api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key)
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._max_attempts = max_retries + 1
        self._client = http_client
        self._async_client = async_http_client
        self._owns_client = http_client is None
        self._owns_async_client = async_http_client is None
        self._resize = resize
        self._extra_body = dict(extra_body or {})

    def count_tokens(self, text: str) -> int:
        """An estimate (the server's tokenizer is not available here)."""
        return estimate_tokens(text)

    def _call(self, request: VisionRequest, *, stream: bool) -> _Call:
        return build_call(
            request,
            model=self.model_name,
            stream=stream,
            context_window=self.context_window,
            resize=self._resize,
            extra_body=self._extra_body,
        )

    def _headers(self) -> dict[str, str]:
        headers = {"accept": "application/json"}
        if self._api_key is not None:
            headers["authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        return headers

    # -- sync ------------------------------------------------------------------------------

    def _sync_client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout)
        return self._client

    def _send(self, call: _Call) -> httpx.Response:
        """POST with the submit-phase retry rules; returns an open 2xx response."""
        client = self._sync_client()
        for attempt in range(1, self._max_attempts + 1):
            request = client.build_request("POST", self.url, json=call.payload, headers=self._headers())
            try:
                response = client.send(request, stream=True)
            except httpx.TransportError as exc:
                delay = failure_retry_delay(exc, attempt, self._max_attempts)
                if delay is None:
                    raise connection_error(exc, self.url) from None
                time.sleep(delay)
                continue
            if response.is_success:
                return response
            content = _read_and_close(response)
            delay = status_retry_delay(response.status_code, response.headers, attempt, self._max_attempts)
            if delay is None:
                raise error_from_response(response.status_code, response.headers, content)
            time.sleep(delay)
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    def generate(self, request: VisionRequest) -> VisionResult:
        call = self._call(request, stream=False)
        response = self._send(call)
        return parse_completion(_json_body(_read_and_close(response), self.url), call, self.url)

    def stream(self, request: VisionRequest) -> Iterator[VisionChunk]:
        call = self._call(request, stream=True)
        response = self._send(call)
        assembler = _StreamAssembler(call, self.url)
        try:
            for line in response.iter_lines():
                delta = assembler.feed_line(line)
                if delta:
                    yield VisionChunk(delta=delta)
                if assembler.done:
                    break
        except httpx.TransportError as exc:
            raise _broken_stream(exc, self.url) from None
        finally:
            response.close()
        assembler.check_complete()
        yield assembler.finish()

    def close(self) -> None:
        """Close the HTTP client this backend made (not one you passed in)."""
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None

    # -- async -----------------------------------------------------------------------------

    def _get_async_client(self) -> httpx.AsyncClient:
        if self._async_client is None:
            self._async_client = httpx.AsyncClient(timeout=self._timeout)
        return self._async_client

    async def _asend(self, call: _Call) -> httpx.Response:
        client = self._get_async_client()
        for attempt in range(1, self._max_attempts + 1):
            request = client.build_request("POST", self.url, json=call.payload, headers=self._headers())
            try:
                response = await client.send(request, stream=True)
            except httpx.TransportError as exc:
                delay = failure_retry_delay(exc, attempt, self._max_attempts)
                if delay is None:
                    raise connection_error(exc, self.url) from None
                await asyncio.sleep(delay)
                continue
            if response.is_success:
                return response
            content = await _aread_and_close(response)
            delay = status_retry_delay(response.status_code, response.headers, attempt, self._max_attempts)
            if delay is None:
                raise error_from_response(response.status_code, response.headers, content)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    async def agenerate(self, request: VisionRequest) -> VisionResult:
        call = self._call(request, stream=False)
        response = await self._asend(call)
        return parse_completion(_json_body(await _aread_and_close(response), self.url), call, self.url)

    async def astream(self, request: VisionRequest) -> AsyncIterator[VisionChunk]:
        call = self._call(request, stream=True)
        response = await self._asend(call)
        assembler = _StreamAssembler(call, self.url)
        try:
            async for line in response.aiter_lines():
                delta = assembler.feed_line(line)
                if delta:
                    yield VisionChunk(delta=delta)
                if assembler.done:
                    break
        except httpx.TransportError as exc:
            raise _broken_stream(exc, self.url) from None
        finally:
            await response.aclose()
        assembler.check_complete()
        yield assembler.finish()

    async def aclose(self) -> None:
        """Close both HTTP clients this backend made."""
        self.close()
        if self._async_client is not None and self._owns_async_client:
            await self._async_client.aclose()
            self._async_client = None

    def __repr__(self) -> str:
        key = ", api_key=SecretStr('**********')" if self._api_key is not None else ""
        return f"OpenAICompatBackend(url={self.url!r}, model={self.model_name!r}{key})"


def _read_and_close(response: httpx.Response) -> bytes:
    try:
        return response.read()
    except httpx.TransportError as exc:
        raise _broken_stream(exc, str(response.request.url)) from None
    finally:
        response.close()


async def _aread_and_close(response: httpx.Response) -> bytes:
    try:
        return await response.aread()
    except httpx.TransportError as exc:
        raise _broken_stream(exc, str(response.request.url)) from None
    finally:
        await response.aclose()


def _json_body(content: bytes, url: str) -> Any:
    try:
        return json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _malformed(url, f"the body is not JSON: {content[:80]!r}") from None


def _broken_stream(exc: httpx.TransportError, url: str) -> APIConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(
            f"Reading the answer from {url} timed out ({type(exc).__name__}); raise timeout=."
        )
    return APIConnectionError(
        f"The connection to {url} broke while reading the answer ({type(exc).__name__})."
    )

"""The OpenAI chat-completions wire format, IO-free.

Payloads from a `VisionRequest` (native system/user/assistant messages, the image as a
content part on its turn), completions and stream chunks into results, and
OpenAI-shaped error bodies and transport failures into our typed errors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from llava_bridge.backends._transport.bodies import loads
from llava_bridge.backends._transport.effects import TransportFailure
from llava_bridge.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    status_error,
)
from llava_bridge.images import ResizePolicy
from llava_bridge.prompts import TokenBudget, estimate_tokens, fit_to_context
from llava_bridge.retry import Failure
from llava_bridge.stops import LLAMA3_STOP_STRINGS, StopScanner, cut_at_stop
from llava_bridge.types import FinishReason, Usage, VisionChunk, VisionRequest, VisionResult

__all__ = [
    "DEFAULT_OPENAI_MODEL",
    "Call",
    "StreamAssembler",
    "broken_stream",
    "build_call",
    "chat_completions_url",
    "connection_error",
    "error_from_response",
    "parse_completion",
]

DEFAULT_OPENAI_MODEL = "llava-llama3"
"""Ollama's name for this model; vLLM uses the Hub id, llama.cpp ignores the field."""


def chat_completions_url(base_url: str) -> str:
    """`.../v1/chat/completions` from a server root (`http://host:8000`) or its `/v1`."""
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url must start with http:// or https://, not {base_url!r}.")
    if url.endswith("/chat/completions"):
        return url
    return f"{url}/chat/completions" if url.endswith("/v1") else f"{url}/v1/chat/completions"


@dataclass(frozen=True)
class Call:
    """One prepared chat completion: what to send and what is known before sending."""

    payload: dict[str, Any]
    request: VisionRequest
    budget: TokenBudget
    model: str
    started: float = field(default_factory=time.perf_counter)

    @property
    def stops(self) -> tuple[str, ...]:
        """What the answer is cut at on the client, whether or not the server was told."""
        return (*LLAMA3_STOP_STRINGS, *self.request.stop)

    @property
    def sends_stop(self) -> bool:
        return "stop" in self.payload

    def without_stop(self) -> Call:
        """The same call with no `stop` field (stops are still cut on the client)."""
        payload = {key: value for key, value in self.payload.items() if key != "stop"}
        return replace(self, payload=payload)


def build_call(
    request: VisionRequest,
    *,
    model: str,
    stream: bool,
    context_window: int,
    resize: ResizePolicy | None,
    extra_body: Mapping[str, Any],
    send_stop: bool = True,
) -> Call:
    """The JSON body for `/v1/chat/completions`, after trimming the conversation to fit.
    `send_stop=False` leaves the `stop` field out (the answer is cut on the client)."""
    request, budget = fit_to_context(request, context_window=context_window)
    image_index = request.image_index
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        content: Any = message.content
        if index == image_index and request.image is not None:
            image = request.image.prepared(resize)  # upright JPEG or PNG; resize None shrinks nothing
            url = image.url if image.is_url else image.to_data_uri()
            content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": content}]
        messages.append({"role": message.role, "content": content})
    name = request.model or model
    payload: dict[str, Any] = {
        "model": name,
        "messages": messages,
        "max_tokens": request.max_new_tokens,
        "stream": stream,
    }
    if send_stop:
        payload["stop"] = ["<|eot_id|>", *request.stop]
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    if stream:
        payload["stream_options"] = {"include_usage": True}
    payload.update(extra_body)
    payload.update(request.extra)
    return Call(payload, request, budget, name)


def _finish_reason(raw: Any, stopped_here: bool) -> FinishReason | None:
    if stopped_here:
        return "stop"
    if raw == "length":
        return "length"
    return "stop" if isinstance(raw, str) and raw else None


def _usage(raw: Any, call: Call, text: str) -> Usage:
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


def parse_completion(content: bytes, call: Call, url: str) -> VisionResult:
    """A VisionResult from the bytes of a non-streamed chat completion."""
    try:
        body: Any = loads(content)
    except ValueError:
        raise _malformed(url, f"the body is not JSON: {content[:80]!r}") from None
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


class StreamAssembler:
    """Turns the `data:` of streamed chunk events into text deltas (cut at stops) and the result."""

    def __init__(self, call: Call, url: str) -> None:
        self._call = call
        self._url = url
        self._scanner = StopScanner(call.stops)
        self._parts: list[str] = []
        self._finish: Any = None
        self._usage: Any = None
        self._id: str | None = None
        self._model: str | None = None
        self._saw_done = False
        self.first_token_at: float | None = None

    @property
    def done(self) -> bool:
        """`[DONE]` arrived or a stop string cut the answer: read no further."""
        return self._saw_done or self._scanner.stopped

    @property
    def cut_short(self) -> bool:
        """A stop string ended the answer before the server did: the rest is not wanted."""
        return self._scanner.stopped and not self._saw_done

    def check_complete(self) -> None:
        """Raise when the stream ended with no `[DONE]`, no finish_reason and no stop."""
        if not (self.done or self._finish):
            raise APIConnectionError(
                f"The stream from {self._url} ended before the answer was complete; try again."
            )

    def feed(self, data: str) -> str:
        """The text safe to show from one SSE `data:` payload ("" after the end)."""
        if self.done:
            return ""
        if data == "[DONE]":
            self._saw_done = True
            return ""
        try:
            chunk = loads(data)
        except ValueError:
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
            if not isinstance(choice, Mapping):
                raise _malformed(self._url, "a stream choice is not an object")
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
        body: Any = loads(content)
    except ValueError:
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


def _cause(failure: TransportFailure) -> str:
    """The failure's exception name ("ConnectError"), or its message when it names none."""
    if failure.timed_out:
        return "timed out"
    name, colon, _ = failure.message.partition(":")
    return name if colon and name.isidentifier() else failure.message


def connection_error(failure: TransportFailure, url: str) -> APIConnectionError:
    """The typed error for a failed POST that will not be re-sent."""
    if failure.failure is Failure.NOT_SENT:
        what = f"Could not connect to {url} ({_cause(failure)}); is the server running?"
    else:
        what = (
            f"The connection to {url} failed after the request was sent ({_cause(failure)}); "
            "it was not re-sent, as the server may be running it."
        )
    if failure.timed_out:
        return APITimeoutError(f"{what} Raise timeout= if the model needs longer.")
    return APIConnectionError(what)


def broken_stream(failure: TransportFailure, url: str) -> APIConnectionError:
    """The typed error for an answer whose body broke off while it was being read."""
    if failure.timed_out:
        return APITimeoutError(
            f"Reading the answer from {url} timed out ({_cause(failure)}); raise timeout=."
        )
    return APIConnectionError(f"The connection to {url} broke while reading the answer ({_cause(failure)}).")

"""fal LLaVA endpoints: their input field names, and turning their output into a result.

fal's LLaVA endpoints take one prompt string and one `image_url`. They differ in
the name of the token-limit field: `fal-ai/llava-next`
uses `max_tokens` (its llms.txt and fal-js's generated types agree); the default
endpoint, `fal-ai/llavav15-13b` and unknown ones use `max_new_tokens` (for
llavav15-13b, fal's llms.txt schema and fal-js's streaming demo say so; fal-js's
generated types say `max_tokens`, taken to be stale). `temperature`, `top_p` and any
`VisionRequest.extra` fields are passed through as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llava_bridge.backends.fal.protocol import endpoint_id_problem
from llava_bridge.defaults import DEFAULT_ENDPOINT
from llava_bridge.errors import ConfigurationError, JobFailedError
from llava_bridge.prompts import estimate_tokens
from llava_bridge.stops import LLAMA3_STOP_STRINGS, cut_at_stop
from llava_bridge.types import FinishReason, Usage, VisionRequest, VisionResult

__all__ = [
    "DEFAULT_ENDPOINT",
    "EndpointProfile",
    "app_path",
    "build_arguments",
    "build_result",
    "estimate_finish",
    "profile_for",
    "read_output",
]

CHARS_PER_TOKEN = 4.0
"""Typical characters per Llama-3 token in English, for guessing finish_reason."""
LENGTH_GUESS_RATIO = 0.9
"""An answer this close to max_new_tokens (estimated) is taken as cut off by the limit."""
_NAMESPACES = ("workflows", "comfy")


@dataclass(frozen=True)
class EndpointProfile:
    """How to speak to one fal endpoint."""

    token_field: str = "max_new_tokens"
    output_field: str = "output"


DEFAULT_PROFILE = EndpointProfile()
PROFILES: dict[str, EndpointProfile] = {
    DEFAULT_ENDPOINT: DEFAULT_PROFILE,
    "fal-ai/llavav15-13b": DEFAULT_PROFILE,
    "fal-ai/llava-next": EndpointProfile(token_field="max_tokens"),
}


def profile_for(endpoint: str) -> EndpointProfile:
    """The profile of `endpoint`; unknown endpoints get the default one."""
    return PROFILES.get(endpoint.strip("/"), DEFAULT_PROFILE)


def check_endpoint(endpoint: str) -> str:
    """`owner/alias[/path]`, stripped of slashes; raise ConfigurationError otherwise."""
    cleaned = endpoint.strip().strip("/")
    if endpoint_id_problem(cleaned) is not None:
        raise ConfigurationError(
            f"{endpoint!r} is not a fal endpoint id; use the form 'owner/alias', e.g. {DEFAULT_ENDPOINT!r}."
        )
    return cleaned


def app_path(endpoint: str) -> str:
    """The `owner/alias` part used by status/result/cancel URLs (a sub-path is dropped)."""
    parts = endpoint.strip("/").split("/")
    keep = 3 if parts[0] in _NAMESPACES else 2
    return "/".join(parts[:keep])


def build_arguments(
    profile: EndpointProfile, request: VisionRequest, prompt: str, image_url: str
) -> dict[str, Any]:
    """The JSON input for the endpoint."""
    arguments: dict[str, Any] = {
        "image_url": image_url,
        "prompt": prompt,
        profile.token_field: request.max_new_tokens,
    }
    if request.temperature is not None:
        arguments["temperature"] = request.temperature
    if request.top_p is not None:
        arguments["top_p"] = request.top_p
    arguments.update(request.extra)
    return arguments


def read_output(data: Any, profile: EndpointProfile, request_id: str | None) -> str:
    """The answer text from the endpoint's JSON output."""
    text = data.get(profile.output_field) if isinstance(data, dict) else None
    if not isinstance(text, str):
        shown = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise JobFailedError(
            f"The endpoint answered without an {profile.output_field!r} text (got {shown}); "
            "it may not be a LLaVA endpoint. Choose another with model=.",
            request_id=request_id,
        )
    return text


def estimate_finish(text: str, max_new_tokens: int) -> FinishReason:
    """A guess: 'length' when the answer is about as long as the limit allows."""
    return "length" if len(text) / CHARS_PER_TOKEN >= LENGTH_GUESS_RATIO * max_new_tokens else "stop"


def build_result(
    raw: str,
    *,
    stop: tuple[str, ...],
    max_new_tokens: int | None,
    prompt_tokens: int,
    model: str,
    request_id: str | None,
    metrics: Mapping[str, float] | None = None,
    logs: tuple[str, ...] = (),
) -> VisionResult:
    """The `VisionResult` for a whole answer: stops cut, finish reason and usage estimated.

    `max_new_tokens` is None for a job resumed by request id (its settings are
    unknown): finish_reason is then only known when a stop string was cut.
    """
    text, stopped = cut_at_stop(raw, (*stop, *LLAMA3_STOP_STRINGS))
    finish: FinishReason | None = "stop" if stopped else None
    completion = estimate_tokens(text)
    if max_new_tokens is not None:
        finish = finish or estimate_finish(raw, max_new_tokens)
        completion = min(completion, max_new_tokens)
    return VisionResult(
        text=text,
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, estimated=True),
        finish_reason=finish,
        model=model,
        request_id=request_id,
        metrics=dict(metrics or {}),
        logs=logs,
    )

"""Every error llava-bridge raises, and what to do about it.

The tree::

    LlavaError
    ├── ConfigurationError            a setting is missing or wrong (no API key, missing extra)
    │   └── MissingCredentialsError   no fal key was found
    ├── InvalidRequestError           (also ValueError) bad input, raised before any network call
    │   ├── InvalidImageError         not an image, truncated, 0 px, over the pixel cap, bad URL
    │   ├── InvalidPromptError        empty prompt, bad max_new_tokens, bad sampling values
    │   ├── UnsupportedContentError   a content block the model cannot take (audio, PDF, tools)
    │   └── ContextOverflowError      even the latest turn does not fit the context window
    ├── APIConnectionError            the server could not be reached or the connection broke
    │   ├── APITimeoutError           an HTTP read/connect timed out
    │   ├── ServerUnreachableError    no connection could be made (refused, unknown host); .url
    │   ├── ResponseTooLargeError     the answer broke a client limit (body size, SSE line length)
    │   └── AmbiguousSubmitError      a submit failed after it was sent: the job may be queued
    ├── DeadlineExceededError         the caller's timeout= ran out (the job was cancelled)
    ├── JobFailedError                the job completed with an error (fal's COMPLETED + error)
    ├── ImageDescriptionError         (llava_bridge.llama_index) images of a batch failed; .failures
    └── APIStatusError                the server answered with an HTTP error status
        ├── BadRequestError           400 and other 4xx without a class of their own
        ├── AuthenticationError       401
        ├── PermissionDeniedError     403 (fal's "User is locked" detail shown verbatim)
        ├── NotFoundError             404 (the endpoint may be retired)
        ├── UnprocessableEntityError  422 (the model rejected the input)
        ├── RateLimitError            429
        └── ServerError               5xx

Messages say what to do. No message, repr or attribute holds an API key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousSubmitError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ContextOverflowError",
    "DeadlineExceededError",
    "InvalidImageError",
    "InvalidPromptError",
    "InvalidRequestError",
    "JobFailedError",
    "LlavaError",
    "MissingCredentialsError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseTooLargeError",
    "ServerError",
    "ServerUnreachableError",
    "UnprocessableEntityError",
    "UnsupportedContentError",
    "replace_advice",
    "status_error",
]

AUTH_ADVICE = "Check FAL_KEY (or api_key=): the server did not accept it."
PERMISSION_ADVICE = "The key is not allowed to run this; see the detail above."


class LlavaError(Exception):
    """Base class of every llava-bridge error."""

    retryable: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the message and every attribute, whatever `__init__` takes (errors
        cross process boundaries: multiprocessing, Ray)."""
        return (_restore, (type(self), self.args), self.__dict__)


def _restore(cls: type[LlavaError], args: tuple[Any, ...]) -> LlavaError:
    """An unpickled error: `args` as given, attributes set by pickle from its state."""
    error = cls.__new__(cls, *args)
    error.args = args
    return error


class ConfigurationError(LlavaError):
    """A setting is missing or wrong; fix the configuration and try again."""


class MissingCredentialsError(ConfigurationError):
    """No fal API key was found."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or "No fal API key found: set the FAL_KEY environment variable "
            "(or FAL_KEY_ID and FAL_KEY_SECRET), or pass api_key= to the backend."
        )


class InvalidRequestError(LlavaError, ValueError):
    """The request is invalid; nothing was sent."""


class InvalidImageError(InvalidRequestError):
    """The image cannot be used: wrong type, corrupt, too large, or a refused URL."""


class InvalidPromptError(InvalidRequestError):
    """The prompt or a generation setting is invalid."""


class UnsupportedContentError(InvalidRequestError):
    """A message holds content the model cannot take."""


class ContextOverflowError(InvalidRequestError):
    """The conversation cannot fit the model's context window, even trimmed."""

    def __init__(self, message: str, *, needed: int, available: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.available = available


class APIConnectionError(LlavaError):
    """The server could not be reached, or the connection broke mid-request."""

    retryable = True

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class APITimeoutError(APIConnectionError):
    """An HTTP request timed out."""


class ServerUnreachableError(APIConnectionError):
    """No connection could be made to `url` (refused, unknown host), after the retries."""

    def __init__(self, message: str, *, url: str, reason: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.reason = reason
        """What failed, without advice: "the submit request failed after 5 attempts: ..."."""


class AmbiguousSubmitError(APIConnectionError):
    """A submit failed after the server may have received it.

    The job may be queued and will run (and be billed). It was not re-sent, so
    that it does not run twice.
    """

    retryable = False


class ResponseTooLargeError(APIConnectionError):
    """The server's answer broke a client limit (body size, event-stream line length).

    Not retried: the same server would send the same answer."""

    retryable = False


class DeadlineExceededError(LlavaError, TimeoutError):
    """The caller's whole-call `timeout=` ran out; the job was cancelled on the server."""

    def __init__(self, message: str, *, timeout: float, request_id: str | None) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.request_id = request_id


class JobFailedError(LlavaError):
    """The job ran and failed on the server."""

    def __init__(self, message: str, *, request_id: str | None, error_type: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.error_type = error_type


class APIStatusError(LlavaError):
    """The server answered with an HTTP error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        request_id: str | None = None,
        error_type: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.request_id = request_id
        self.error_type = error_type
        self.body = body


class BadRequestError(APIStatusError):
    """400, or another 4xx with no class of its own."""


class AuthenticationError(APIStatusError):
    """401: the key was missing or not accepted."""


class PermissionDeniedError(APIStatusError):
    """403: the key is valid but not allowed (fal: a locked account)."""


class NotFoundError(APIStatusError):
    """404: the endpoint or the request id does not exist."""


class UnprocessableEntityError(APIStatusError):
    """422: the model rejected the input."""


class RateLimitError(APIStatusError):
    """429: too many requests; retried automatically before this is raised."""

    retryable = True


class ServerError(APIStatusError):
    """5xx: the server failed."""

    retryable = True


def _detail_text(body: Any) -> str:
    """Render fal's `detail` (a string, or a list of FastAPI-style errors) as lines."""
    detail = body.get("detail") if isinstance(body, Mapping) else body
    if detail is None:
        return ""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        lines = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(part) for part in item.get("loc", []) if part != "body")
                msg = item.get("msg", json.dumps(item))
                lines.append(f"- {loc}: {msg}" if loc else f"- {msg}")
            else:
                lines.append(f"- {item}")
        return "\n".join(lines)
    return json.dumps(detail)


def status_error(
    status_code: int,
    body: Any,
    *,
    request_id: str | None = None,
    error_type: str | None = None,
    endpoint: str | None = None,
) -> APIStatusError:
    """Map an HTTP error status and its body to the error class for it."""
    detail = _detail_text(body)
    if isinstance(body, Mapping) and error_type is None:
        raw_type = body.get("error_type")
        error_type = raw_type if isinstance(raw_type, str) else None
    cls: type[APIStatusError]
    if status_code == 401:
        cls, advice = AuthenticationError, AUTH_ADVICE
    elif status_code == 403:
        cls, advice = PermissionDeniedError, PERMISSION_ADVICE
    elif status_code == 404:
        cls = NotFoundError
        advice = (
            f"Endpoint {endpoint!r} was not found; it may be retired. "
            "Choose another with model= (e.g. 'fal-ai/llava-next' or 'fal-ai/llavav15-13b')."
            if endpoint
            else "The endpoint or request id was not found."
        )
    elif status_code == 422:
        cls, advice = UnprocessableEntityError, "The model rejected the input; fix the fields listed."
    elif status_code == 429:
        cls, advice = RateLimitError, "Rate limited after retries; lower concurrency or try later."
    elif status_code >= 500:
        cls, advice = ServerError, "The server failed; try again later."
    else:
        cls, advice = BadRequestError, "The server refused the request; see the detail."
    head = f"HTTP {status_code}"
    if error_type:
        head += f" ({error_type})"
    if request_id:
        head += f" [request {request_id}]"
    message = f"{head}: {detail}\n{advice}" if detail else f"{head}. {advice}"
    return cls(
        message,
        status_code=status_code,
        request_id=request_id,
        error_type=error_type,
        body=body,
    )


def replace_advice(message: str, advice: str) -> str:
    """`message` of a 401/403 with its generic advice replaced by `advice` (appended if absent)."""
    for generic in (AUTH_ADVICE, PERMISSION_ADVICE):
        if generic in message:
            return message.replace(generic, advice)
    return f"{message}\n{advice}"

"""Failures as OpenAI-shaped answers: `{"error": {"message", "type", "param", "code"}}`.

The status codes are the ones OpenAI's clients turn into their exception classes:
400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 413 (a plain
APIStatusError), 429 RateLimitError, 5xx InternalServerError.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from llava_bridge.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ContextOverflowError,
    DeadlineExceededError,
    InvalidImageError,
    InvalidRequestError,
    JobFailedError,
)

__all__ = ["OpenAIError", "from_exception", "from_validation"]

logger = logging.getLogger("llava_bridge.server")

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class OpenAIError(Exception):
    """An answer in OpenAI's error shape, raised inside the OpenAI routes."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return _AsciiJSONResponse(self.body(), status_code=self.status, headers=self.headers)


class _AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped, so a message echoing input with lone surrogates still encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def from_validation(exc: ValidationError) -> OpenAIError:
    """A 400 naming the first field the request body got wrong (as `param`)."""
    error = exc.errors(include_url=False)[0]
    location = _dotted(error.get("loc", ()))
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if error.get("type") == "json_invalid":
        return OpenAIError(400, f"The request body is not valid JSON: {message}.", code="invalid_json")
    if error.get("type") == "missing":
        return OpenAIError(
            400,
            f"Missing required parameter: '{location}'.",
            param=location,
            code="missing_required_parameter",
        )
    where = f"'{location}'" if location else "the request body"
    return OpenAIError(
        400, f"Invalid value for {where}: {message}.", param=location or None, code="invalid_value"
    )


def from_exception(exc: BaseException) -> OpenAIError:
    """The OpenAI-shaped answer for a failure while preparing or running a completion."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, ContextOverflowError):
        return OpenAIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, InvalidImageError):
        return OpenAIError(400, str(exc), param="messages", code="invalid_image")
    if isinstance(exc, InvalidRequestError):
        return OpenAIError(400, str(exc), param="messages", code="invalid_value")
    if isinstance(exc, ValidationError):
        return from_validation(exc)
    if isinstance(exc, APIStatusError):
        return _upstream_status(exc)
    if isinstance(exc, JobFailedError):
        return OpenAIError(
            502, f"The model server's job failed: {exc}", type=SERVER_ERROR, code="upstream_error"
        )
    if isinstance(exc, (APITimeoutError, DeadlineExceededError)):
        return OpenAIError(504, f"The model server timed out: {exc}", type=SERVER_ERROR, code="timeout")
    if isinstance(exc, APIConnectionError):
        return OpenAIError(
            503, f"Cannot reach the model server: {exc}", type=SERVER_ERROR, code="service_unavailable"
        )
    logger.error("A chat completion failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return OpenAIError(
        500, f"The model failed ({type(exc).__name__}); see the server's log.", type=SERVER_ERROR
    )


def _upstream_status(exc: APIStatusError) -> OpenAIError:
    if exc.status_code in (400, 413, 422):
        return OpenAIError(400, f"The model server refused the request: {exc}", code="invalid_value")
    if exc.status_code == 429:
        return OpenAIError(
            429, f"The model server is busy: {exc}", type="rate_limit_error", code="rate_limit_exceeded"
        )
    return OpenAIError(502, f"The model server failed: {exc}", type=SERVER_ERROR, code="upstream_error")


def _dotted(location: Sequence[Any]) -> str:
    return ".".join(str(part) for part in location if part not in ("body",))

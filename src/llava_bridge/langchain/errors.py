"""llava-bridge errors re-raised as LangChain's standard model errors.

Each llava-bridge error is re-raised as a class that inherits from both the
original llava-bridge class and the matching `langchain_core.exceptions` class,
so code catching either keeps working, and LangChain's agent middleware can tell
a retryable failure (`is_retryable`) from one that will fail again. A core
`ContextOverflowError` becomes one that is also LangChain's `ContextOverflowError`,
which `SummarizationMiddleware` handles.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from langchain_core import exceptions as lc

from llava_bridge import errors as core

__all__ = ["is_retryable", "langchain_error", "translated_errors"]

# First match wins: more specific llava-bridge classes come before their bases.
_MAPPING: tuple[tuple[type[core.LlavaError], type[lc.ModelError]], ...] = (
    (core.ContextOverflowError, lc.ContextOverflowError),
    (core.MissingCredentialsError, lc.ModelAuthenticationError),
    (core.InvalidRequestError, lc.ModelInvalidRequestError),
    (core.ConfigurationError, lc.ModelInvalidRequestError),
    (core.APITimeoutError, lc.ModelTimeoutError),
    (core.DeadlineExceededError, lc.ModelTimeoutError),
    (core.APIConnectionError, lc.ModelConnectionError),
    (core.RateLimitError, lc.ModelRateLimitError),
    (core.AuthenticationError, lc.ModelAuthenticationError),
    (core.PermissionDeniedError, lc.ModelPermissionDeniedError),
    (core.NotFoundError, lc.ModelNotFoundError),
    (core.ServerError, lc.ModelAPIError),
    (core.JobFailedError, lc.ModelAPIError),
    (core.APIStatusError, lc.ModelInvalidRequestError),
)

_mixed: dict[type[core.LlavaError], type[core.LlavaError]] = {}


def _mixed_class(cls: type[core.LlavaError]) -> type[core.LlavaError] | None:
    """The class that is both `cls` and its LangChain counterpart (made once, then cached)."""
    if cls in _mixed:
        return _mixed[cls]
    base = next((lc_cls for core_cls, lc_cls in _MAPPING if issubclass(cls, core_cls)), None)
    if base is None:
        return None
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": f"{cls.__doc__ or cls.__name__} (also LangChain's {base.__name__})",
        # llava-bridge's own retry policy decides; e.g. a submit that may have been
        # queued (AmbiguousSubmitError) is a connection error that must not be retried.
        "is_retryable": cls.retryable,
        "__init__": Exception.__init__,
    }
    mixed = type(cls.__name__, (cls, base), namespace)
    _mixed[cls] = mixed
    return mixed


def langchain_error(error: core.LlavaError) -> core.LlavaError:
    """`error` as an instance that is also LangChain's matching `ModelError` subclass."""
    if isinstance(error, lc.ModelError):
        return error
    mixed = _mixed_class(type(error))
    if mixed is None:
        return error
    translated = mixed(*error.args)
    translated.__dict__.update(error.__dict__)
    return translated


def is_retryable(error: BaseException) -> bool:
    """Whether trying again can succeed: for `with_retry(retry_if_exception_type=is_retryable)`.

    True for LangChain model errors that say so (`is_retryable`: timeouts, connection
    failures, 429, 5xx) and llava-bridge errors marked retryable; False for everything
    else, such as `InvalidImageError`, a bad request or a rejected key, which fail again.
    """
    if isinstance(error, lc.ModelError):
        return bool(error.is_retryable)
    if isinstance(error, core.LlavaError):
        return error.retryable
    return False


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise llava-bridge errors inside the block as their LangChain-compatible twins."""
    try:
        yield
    except core.LlavaError as error:
        translated = langchain_error(error)
        if translated is error:
            raise
        raise translated.with_traceback(error.__traceback__) from error

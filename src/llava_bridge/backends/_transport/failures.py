"""ONE table: what an exception raised while making an HTTP call says about the request.

Every transport (our sync/async pools, httpx behind the adapter, OpenAI-compatible
calls) classifies its failures here, so a `WriteError` on a POST means the same
thing to every backend:

- `Outcome.NOT_SENT`: the server cannot have acted on the request (no connection,
  or the request did not get out whole); retrying is always safe.
- `Outcome.SENT_UNKNOWN`: the request may have arrived; only reads are retried.
- `Outcome.FATAL`: a mistake in the request itself, or an answer that broke a limit;
  never retried.
"""

from __future__ import annotations

import enum
import ssl

import h11
import httpx

from llava_bridge.backends._transport.bodies import ResponseLimitExceeded
from llava_bridge.backends._transport.effects import TransportFailure
from llava_bridge.retry import Failure

__all__ = [
    "Outcome",
    "ResponseLimitExceeded",
    "UnusableRequest",
    "classify",
    "closed_before_reading",
    "describe",
    "to_failure",
]


class Outcome(enum.Enum):
    """What a failed call says about its request."""

    NOT_SENT = "not_sent"
    SENT_UNKNOWN = "sent_unknown"
    FATAL = "fatal"


class UnusableRequest(ValueError):
    """The request cannot be put on the wire as given (bad scheme, host, header)."""


_HTTPX_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,  # the request did not get out whole: the server cannot act on it
    httpx.WriteTimeout,
    httpx.ProxyError,
)
_FATAL = (
    UnusableRequest,
    ResponseLimitExceeded,
    h11.LocalProtocolError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.InvalidURL,
    httpx.TooManyRedirects,
)


def classify(exc: BaseException, *, sent: bool = True) -> Outcome:
    """The outcome `exc` stands for. `sent` is what the raiser knows for plain socket
    errors: whether the whole request had gone out (httpx's own types say it themselves)."""
    if isinstance(exc, _FATAL):
        return Outcome.FATAL
    if isinstance(exc, _HTTPX_NOT_SENT):
        return Outcome.NOT_SENT
    if isinstance(exc, (httpx.HTTPError, h11.RemoteProtocolError)):
        return Outcome.SENT_UNKNOWN
    return Outcome.SENT_UNKNOWN if sent else Outcome.NOT_SENT


def closed_before_reading(exc: BaseException) -> bool:
    """Whether httpx's `exc`, on a connection kept alive from an earlier request, says the
    server had closed it before reading this one: a connection reset (a socket closed with
    unread data sends one), so the request never reached it whole. A plain end of the
    connection does not say it here (httpx cannot tell whether part of an answer came
    first); our pools tell both apart (`ClientConnection.closed_unanswered`)."""
    if not isinstance(exc, httpx.ReadError):
        return False
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionResetError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def describe(exc: BaseException) -> str:
    """A short text for `exc`, for messages and logs."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate check failed: {exc.verify_message or exc}"
    if isinstance(exc, (UnusableRequest, ResponseLimitExceeded)):
        return str(exc)
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)) and not str(exc):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def to_failure(exc: BaseException, *, sent: bool = True) -> TransportFailure:
    """`exc` as the `TransportFailure` the flows retry or raise on."""
    outcome = classify(exc, sent=sent)
    timed_out = isinstance(exc, (TimeoutError, httpx.TimeoutException))
    message = describe(exc)
    if outcome is Outcome.FATAL:
        over_limit = isinstance(exc, ResponseLimitExceeded)
        if not over_limit and not isinstance(exc, UnusableRequest):
            message += "; check the URL and headers"
        return TransportFailure(
            Failure.AFTER_SEND if over_limit else Failure.NOT_SENT, message, fatal=True, over_limit=over_limit
        )
    failure = Failure.NOT_SENT if outcome is Outcome.NOT_SENT else Failure.AFTER_SEND
    return TransportFailure(failure, message, timed_out=timed_out)

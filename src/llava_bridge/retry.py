"""When to retry an HTTP call, and how long to wait: small pure functions.

The rules (docs/reliability.md tells them for users):

- Reads (status, result, cancel, uploads) retry on any transport error, 408, 409,
  429 and 5xx except a fal user-timeout 504.
- A submit (queue submit, sync run, stream) retries only when the server cannot
  have queued it: the connection was never made, 408/409/429, or an ingress
  502/503/504 (no `x-fal-request-id`: the proxy answered, the queue never saw it).
  A failure after the body was sent is ambiguous and is never retried.
- `Retry-After` (`retry-after-ms`, seconds, or an HTTP date) is honoured up to
  `MAX_RETRY_AFTER`; otherwise exponential backoff with jitter.
"""

from __future__ import annotations

import email.utils
import enum
import math
import random
import time
from collections.abc import Mapping

__all__ = [
    "BASE_DELAY",
    "MAX_ATTEMPTS",
    "MAX_DELAY",
    "MAX_RETRY_AFTER",
    "Failure",
    "Phase",
    "backoff_delay",
    "parse_retry_after",
    "retry_delay",
    "should_retry_failure",
    "should_retry_status",
]

MAX_ATTEMPTS = 5
"""Attempts in all (the first try plus 4 retries)."""
BASE_DELAY = 0.25
"""Seconds before the first retry, doubled each time."""
MAX_DELAY = 8.0
"""Longest backoff between two attempts, in seconds."""
MAX_RETRY_AFTER = 30.0
"""Longest Retry-After we wait; a longer one raises instead of waiting."""
JITTER = 0.25
"""Backoff is multiplied by a factor in [1 - JITTER, 1]."""

RETRYABLE_STATUSES = frozenset({408, 409, 429})
INGRESS_STATUSES = frozenset({502, 503, 504})


class Phase(enum.Enum):
    """What kind of call failed."""

    SUBMIT = "submit"
    """Creates work on the server: queue submit, sync run, stream."""
    READ = "read"
    """Safe to repeat: status, result, cancel, storage token and upload."""


class Failure(enum.Enum):
    """How a transport failed, as far as the client can tell."""

    NOT_SENT = "not_sent"
    """No connection was made (refused, DNS, connect timeout, pool timeout)."""
    AFTER_SEND = "after_send"
    """The connection broke or timed out after the request may have arrived."""


def should_retry_status(status: int, headers: Mapping[str, str], phase: Phase) -> bool:
    """Whether an HTTP error status is worth another attempt."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if status in RETRYABLE_STATUSES:
        return True
    if status == 504 and "x-fal-request-timeout-type" in lowered:
        return False  # the caller's own start_timeout ran out
    is_ingress = status in INGRESS_STATUSES and "x-fal-request-id" not in lowered
    if phase is Phase.SUBMIT:
        return is_ingress
    return status >= 500


def should_retry_failure(failure: Failure, phase: Phase) -> bool:
    """Whether a transport failure is worth another attempt."""
    return phase is Phase.READ or failure is Failure.NOT_SENT


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        moment = email.utils.mktime_tz(parsed)
        return max(0.0, moment - (time.time() if now is None else now))
    return value if math.isfinite(value) and value >= 0 else None


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Jittered exponential backoff before retry number `attempt` (1-based)."""
    exponent = min(max(attempt - 1, 0), 30)
    delay = min(BASE_DELAY * 2**exponent, MAX_DELAY)
    factor: float = (rng or random).random()
    return float(delay * (1 - JITTER * factor))


def retry_delay(
    attempt: int,
    headers: Mapping[str, str] | None = None,
    rng: random.Random | None = None,
    now: float | None = None,
) -> float | None:
    """Seconds before retry `attempt`; None when Retry-After asks for more than the cap."""
    retry_after = parse_retry_after(headers or {}, now)
    if retry_after is not None:
        return retry_after if retry_after <= MAX_RETRY_AFTER else None
    return backoff_delay(attempt, rng)

"""The retry policy, pinned by tables."""

from __future__ import annotations

import random

import pytest

from llava_bridge.retry import (
    BASE_DELAY,
    MAX_DELAY,
    MAX_RETRY_AFTER,
    Failure,
    Phase,
    backoff_delay,
    parse_retry_after,
    retry_delay,
    should_retry_failure,
    should_retry_status,
)

FAL_ID = {"x-fal-request-id": "abc"}


@pytest.mark.parametrize(
    ("status", "headers", "phase", "expected"),
    [
        (408, {}, Phase.SUBMIT, True),
        (409, {}, Phase.SUBMIT, True),
        (429, {}, Phase.SUBMIT, True),
        (429, FAL_ID, Phase.READ, True),
        (502, {}, Phase.SUBMIT, True),  # ingress: the queue never saw it
        (503, {}, Phase.SUBMIT, True),
        (504, {}, Phase.SUBMIT, True),
        (502, FAL_ID, Phase.SUBMIT, False),  # fal answered: it may be queued
        (503, FAL_ID, Phase.SUBMIT, False),
        (500, {}, Phase.SUBMIT, False),
        (500, FAL_ID, Phase.READ, True),
        (503, FAL_ID, Phase.READ, True),
        (504, {"X-Fal-Request-Timeout-Type": "user"}, Phase.SUBMIT, False),
        (504, {"X-Fal-Request-Timeout-Type": "user"}, Phase.READ, False),
        (400, {}, Phase.SUBMIT, False),
        (401, {}, Phase.READ, False),
        (403, {}, Phase.READ, False),
        (404, {}, Phase.READ, False),
        (422, {}, Phase.SUBMIT, False),
    ],
)
def test_should_retry_status(status: int, headers: dict[str, str], phase: Phase, expected: bool) -> None:
    assert should_retry_status(status, headers, phase) is expected


@pytest.mark.parametrize(
    ("failure", "phase", "expected"),
    [
        (Failure.NOT_SENT, Phase.SUBMIT, True),
        (Failure.AFTER_SEND, Phase.SUBMIT, False),
        (Failure.NOT_SENT, Phase.READ, True),
        (Failure.AFTER_SEND, Phase.READ, True),
    ],
)
def test_should_retry_failure(failure: Failure, phase: Phase, expected: bool) -> None:
    assert should_retry_failure(failure, phase) is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"retry-after-ms": "bad", "retry-after": "2"}, 2.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-4"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(headers, now=now) == expected


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(attempt, rng) for attempt in range(1, 12)]
    for attempt, delay in enumerate(delays, start=1):
        ceiling = min(BASE_DELAY * 2 ** (attempt - 1), MAX_DELAY)
        assert 0.75 * ceiling <= delay <= ceiling
    assert backoff_delay(10_000) <= MAX_DELAY


def test_retry_after_wins_within_the_cap_and_refuses_beyond_it() -> None:
    assert retry_delay(1, {"retry-after": "2"}) == 2.0
    assert retry_delay(1, {"retry-after": str(MAX_RETRY_AFTER + 1)}) is None
    assert 0 < (retry_delay(1, {}) or 0) <= BASE_DELAY

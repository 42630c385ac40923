"""The one exception -> outcome table, for httpx's exceptions and our pools' failures."""

from __future__ import annotations

import ssl

import h11
import httpx
import pytest

from llava_bridge.backends._transport.failures import (
    Outcome,
    ResponseLimitExceeded,
    UnusableRequest,
    classify,
    to_failure,
)
from llava_bridge.retry import Failure

_REQUEST = httpx.Request("POST", "http://127.0.0.1/")


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (httpx.ConnectError("refused", request=_REQUEST), Outcome.NOT_SENT),
        (httpx.ConnectTimeout("slow", request=_REQUEST), Outcome.NOT_SENT),
        (httpx.PoolTimeout("busy", request=_REQUEST), Outcome.NOT_SENT),
        (httpx.WriteError("reset", request=_REQUEST), Outcome.NOT_SENT),
        (httpx.WriteTimeout("slow", request=_REQUEST), Outcome.NOT_SENT),
        (httpx.ProxyError("proxy", request=_REQUEST), Outcome.NOT_SENT),
        (httpx.ReadError("reset", request=_REQUEST), Outcome.SENT_UNKNOWN),
        (httpx.ReadTimeout("slow", request=_REQUEST), Outcome.SENT_UNKNOWN),
        (httpx.RemoteProtocolError("garbled", request=_REQUEST), Outcome.SENT_UNKNOWN),
        (h11.RemoteProtocolError("garbled"), Outcome.SENT_UNKNOWN),
        (httpx.UnsupportedProtocol("ftp", request=_REQUEST), Outcome.FATAL),
        (httpx.LocalProtocolError("bad header", request=_REQUEST), Outcome.FATAL),
        (httpx.InvalidURL("bad"), Outcome.FATAL),
        (UnusableRequest("bad scheme"), Outcome.FATAL),
        (ResponseLimitExceeded("too big"), Outcome.FATAL),
    ],
)
def test_each_exception_has_one_outcome(exc: BaseException, outcome: Outcome) -> None:
    assert classify(exc) is outcome
    assert classify(exc, sent=False) is outcome  # the type decides, not the caller's guess


@pytest.mark.parametrize("exc", [ConnectionResetError("reset"), TimeoutError(), OSError("x")])
def test_a_plain_socket_error_depends_on_whether_the_request_was_out(exc: OSError) -> None:
    assert classify(exc, sent=False) is Outcome.NOT_SENT
    assert classify(exc, sent=True) is Outcome.SENT_UNKNOWN


def test_failures_carry_retry_kind_and_flags() -> None:
    assert to_failure(httpx.WriteError("reset"), sent=True).failure is Failure.NOT_SENT
    timed_out = to_failure(TimeoutError(), sent=True)
    assert (timed_out.failure, timed_out.timed_out, timed_out.message) == (
        Failure.AFTER_SEND,
        True,
        "timed out",
    )
    over = to_failure(ResponseLimitExceeded("the body is over 10 bytes"))
    assert over.fatal and over.over_limit and over.message == "the body is over 10 bytes"
    fatal = to_failure(httpx.UnsupportedProtocol("ftp"))
    assert fatal.fatal and not fatal.over_limit and "check the URL" in fatal.message


def test_a_certificate_failure_says_so() -> None:
    exc = ssl.SSLCertVerificationError("x")
    exc.verify_message = "self-signed certificate"
    assert to_failure(exc, sent=False).message == "TLS certificate check failed: self-signed certificate"

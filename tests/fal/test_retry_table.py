"""Which failures FalBackend retries, call by call: a table over httpx.MockTransport.

Each case fails one call once, then lets everything succeed; a retried case ends
with the answer and two attempts at that call, a refused one raises after one.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest

from llava_bridge import LlavaError, VisionRequest
from llava_bridge.backends._transport import flows as _fal_http
from llava_bridge.backends.fal.backend import FalBackend

NGINX = "<html><body><center>nginx</center></body></html>"
FAL_ID = {"x-fal-request-id": "req-1"}


@dataclass(frozen=True)
class Status:
    code: int
    headers: tuple[tuple[str, str], ...] = ()
    html: bool = False

    def response(self) -> httpx.Response:
        if self.html:
            return httpx.Response(self.code, text=NGINX, headers=dict(self.headers))
        return httpx.Response(self.code, json={"detail": "injected"}, headers=dict(self.headers))


ID = (("x-fal-request-id", "req-1"),)
USER_TIMEOUT = (("x-fal-request-id", "req-1"), ("X-Fal-Request-Timeout-Type", "user"))

CASES: list[tuple[str, object, bool]] = [
    # submit: only what cannot have queued the job
    ("submit", Status(408), True),
    ("submit", Status(409), True),
    ("submit", Status(429), True),
    ("submit", Status(502, html=True), True),
    ("submit", Status(503, html=True), True),
    ("submit", Status(504, html=True), True),
    ("submit", Status(502, ID), False),
    ("submit", Status(503, ID), False),
    ("submit", Status(500), False),
    ("submit", Status(504, USER_TIMEOUT), False),
    ("submit", Status(400), False),
    ("submit", Status(401), False),
    ("submit", Status(403), False),
    ("submit", Status(404), False),
    ("submit", Status(422), False),
    ("submit", httpx.ConnectError, True),
    ("submit", httpx.ConnectTimeout, True),
    ("submit", httpx.PoolTimeout, True),
    ("submit", httpx.WriteError, True),
    ("submit", httpx.ReadTimeout, False),
    ("submit", httpx.ReadError, False),
    ("submit", httpx.RemoteProtocolError, False),
    # status: reads retry freely
    ("status", Status(429), True),
    ("status", Status(500, ID), True),
    ("status", Status(503, ID), True),
    ("status", Status(502, html=True), True),
    ("status", Status(504, USER_TIMEOUT), False),
    ("status", Status(404), False),
    ("status", Status(403), False),
    ("status", httpx.ReadTimeout, True),
    ("status", httpx.RemoteProtocolError, True),
    ("status", httpx.ConnectError, True),
    # result: a 500 fal sent is the job's own answer; runner/gateway 5xx are retried
    ("result", Status(500, ID), False),
    ("result", Status(503, ID), True),
    ("result", Status(502, ID), True),
    ("result", Status(504, USER_TIMEOUT), False),
    ("result", Status(502, html=True), True),
    ("result", Status(429), True),
    ("result", Status(422, ID), False),
    ("result", httpx.ReadError, True),
    ("result", httpx.ReadTimeout, True),
    # sync run: like a submit
    ("run", Status(429), True),
    ("run", Status(503, html=True), True),
    ("run", Status(503, ID), False),
    ("run", httpx.ConnectError, True),
    ("run", httpx.ReadTimeout, False),
]


def _route(request: httpx.Request) -> str:
    path = request.url.path
    if path.startswith("/run/"):
        return "run"
    if path.endswith("/status"):
        return "status"
    if "/requests/" in path:
        return "result"
    return "submit"


def _ok(route: str) -> httpx.Response:
    if route == "submit":
        return httpx.Response(200, json={"request_id": "req-1", "status": "IN_QUEUE"}, headers=FAL_ID)
    if route == "status":
        return httpx.Response(200, json={"status": "COMPLETED", "logs": [], "metrics": {}}, headers=FAL_ID)
    return httpx.Response(200, json={"output": "fine"}, headers=FAL_ID)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decisions, not timing: retry at once."""
    monkeypatch.setattr(_fal_http, "backoff_delay", lambda attempt, rng=None: 0.0)


@pytest.mark.parametrize(("call", "fault", "retried"), CASES, ids=lambda v: getattr(v, "__name__", repr(v)))
def test_retry_decision(call: str, fault: object, retried: bool) -> None:
    calls: Counter[str] = Counter()

    def handler(request: httpx.Request) -> httpx.Response:
        route = _route(request)
        calls[route] += 1
        if route == call and calls[route] == 1:
            if isinstance(fault, Status):
                return fault.response()
            assert isinstance(fault, type)
            raise fault("injected", request=request)
        return _ok(route)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    backend = FalBackend(
        base_url="http://fal.test",
        mode="run" if call == "run" else "queue",
        status_stream=False,
        poll_interval=0.01,
        http_client=client,
    )
    request = VisionRequest(prompt="hi")
    if retried:
        assert backend.generate(request).text == "fine"
        assert calls[call] == 2
    else:
        with pytest.raises(LlavaError):
            backend.generate(request)
        assert calls[call] == 1


def test_the_submit_body_is_compact_json_with_the_profile_fields() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if _route(request) == "submit":
            seen.append(json.loads(request.content))
            assert b", " not in request.content
        return _ok(_route(request))

    client = httpx.Client(transport=httpx.MockTransport(handler))
    backend = FalBackend(
        "fal-ai/llava-next", base_url="http://fal.test", status_stream=False, http_client=client
    )
    backend.generate(VisionRequest(prompt="hi", max_new_tokens=32, temperature=0.2, extra={"seed": 7}))

    assert seen[0]["max_tokens"] == 32 and "max_new_tokens" not in seen[0]
    assert seen[0]["temperature"] == 0.2 and seen[0]["seed"] == 7

"""What `llava-bridge serve` (and FalBackend, for ids) refuses: one test per refusal.

Against real server processes on 127.0.0.1. Waits are deadlines far above what
each step needs; nothing here depends on an idle machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from llava_bridge import FalBackend
from llava_bridge.errors import ConfigurationError, InvalidRequestError
from llava_bridge.server.cli import API_KEY_ENV
from tests.server.conftest import APP
from tests.support.local_server import LocalServer, running_server

HEADER_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def keyless() -> Iterator[LocalServer]:
    """No key, bound to 127.0.0.2 (a loopback address that is not a loopback *name*)."""
    flags = ["--host", "127.0.0.2", "--allowed-host", "llava.internal"]
    flags += ["--header-timeout", str(HEADER_TIMEOUT_S), "--fake-latency", "0.05"]
    with running_server(*flags, env={API_KEY_ENV: ""}) as running:
        yield running


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    """`serve` expected to stop at once: run to its end."""
    env = {key: value for key, value in os.environ.items() if key != API_KEY_ENV}
    return subprocess.run(
        [sys.executable, "-m", "llava_bridge.server", "--port", "0", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _assert_usage_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert all(fragment in errors[0] for fragment in fragments), errors[0]
    assert "Traceback" not in result.stderr and "serving on" not in result.stdout


def test_without_a_key_only_allowed_hosts_are_answered(keyless: LocalServer) -> None:
    health = f"{keyless.base_url}/health"
    port = keyless.port
    for host in (f"127.0.0.2:{port}", f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert httpx.get(health, headers={"Host": host}).status_code == 200, host
    assert httpx.get(health, headers={"Host": "LLAVA.internal"}).status_code == 200  # --allowed-host
    for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.3", "localhost.attacker.example"):
        refused = httpx.get(health, headers={"Host": host})
        assert refused.status_code == 403, host
        assert "--allowed-host" in refused.json()["detail"]
    submit = httpx.post(f"{keyless.base_url}/{APP}", json={}, headers={"Host": "attacker.example"})
    assert submit.status_code == 403  # before anything else looks at the request


def test_with_a_key_any_host_is_answered() -> None:
    with running_server("--api-key", "host-test-key") as server:
        answer = httpx.get(
            f"{server.base_url}/{APP}/requests/nope/status",
            headers={"Host": "attacker.example", "Authorization": "Key host-test-key"},
        )
    assert answer.status_code == 404  # the key guards it; the Host does not matter


@pytest.mark.parametrize("field", ["max_new_tokens", "max_tokens"])
@pytest.mark.parametrize("value", [True, "5", 5.0])
def test_token_limits_must_be_integers(
    keyless: LocalServer, data_uri: str, field: str, value: object
) -> None:
    body = {"image_url": data_uri, "prompt": "?", field: value}
    for path in (f"/{APP}", f"/run/{APP}"):
        answer = httpx.post(keyless.base_url + path, json=body)
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json()["message"] == f"{field}: Input should be a valid integer"
    fine = httpx.post(f"{keyless.base_url}/run/{APP}", json={**body, field: 5})
    assert fine.status_code == 200


def test_request_ids_that_leave_their_path_segment_are_refused(keyless: LocalServer) -> None:
    with httpx.Client(base_url=keyless.base_url) as http:
        for raw in ("%2E%2E", "%2E", "abc%0A", "a%09b", "%C3%A9"):
            status = http.get(f"/{APP}/requests/{raw}/status")
            assert status.status_code == 400, raw
            assert "is not a request id" in status.json()["detail"]
            assert http.put(f"/{APP}/requests/{raw}/cancel").status_code == 400
        assert http.get(f"/{APP}/requests/{'x' * 201}").status_code == 400
        assert http.get(f"/{APP}/requests/no-such-job/status").status_code == 404  # well-formed


def test_fal_backend_refuses_the_same_ids(keyless: LocalServer) -> None:
    for endpoint in ("fal-ai/../../admin", "fal-ai/x\tz", "fal-ai/./x", "fal-ai"):
        with pytest.raises(ConfigurationError, match="not a fal endpoint id"):
            FalBackend(model=endpoint, base_url=keyless.base_url, api_key="k")
    with FalBackend(base_url=keyless.base_url, api_key="k") as backend:
        for request_id in ("..", ".", "abc\n", "a/b", "x" * 201):
            with pytest.raises(InvalidRequestError, match="not a fal request id"):
                backend.handle(request_id)
        assert backend.handle("a-fine_id.1").request_id == "a-fine_id.1"


@pytest.mark.parametrize(
    ("endpoint", "fragment"),
    [
        ("cdn/files", "'cdn/'"),
        ("run/x", "'run/'"),
        ("v1/chat", "'v1/'"),
        ("rest/storage", "'rest/'"),
        ("fal-ai/..", "'..'"),
        ("owner/alias/extra", "'owner/alias' ids only"),
    ],
)
def test_endpoint_ids_that_shadow_the_servers_routes_stop_it(endpoint: str, fragment: str) -> None:
    _assert_usage_error(_serve("--db", "memory://", "--endpoint", endpoint), endpoint, fragment)


def test_an_unknown_db_scheme_stops_serve_with_one_line() -> None:
    _assert_usage_error(_serve("--db", "redis://localhost/0"), "'redis://'", "--db", "sqlite://")


def test_a_chunked_body_over_the_cap_gets_413() -> None:
    with running_server("--max-body-mb", "0.05") as server:

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            yield b'{"prompt": "?", "image_url": "'
            for _ in range(40):
                yield b"A" * 5000
            yield b'"}'

        answer = httpx.post(
            f"{server.base_url}/{APP}", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 413
        assert "--max-body-mb" in answer.json()["detail"]
        small = httpx.post(
            f"{server.base_url}/{APP}",
            content=iter([b'{"prompt": "?", ', b'"image_url": "https://x.example/a.png"}']),
            headers={"Content-Type": "application/json"},
        )
        assert small.status_code != 413  # a chunked body under the cap reaches the route
        assert httpx.get(f"{server.base_url}/health").status_code == 200


def test_clients_that_never_finish_their_headers_are_dropped(keyless: LocalServer) -> None:
    slow = []
    for n in range(50):
        sock = socket.create_connection(("127.0.0.2", keyless.port), timeout=30)
        sock.sendall(b"GET /health HTT" if n % 2 else b"")  # half a request line, or nothing
        slow.append(sock)
    try:
        assert httpx.get(f"{keyless.base_url}/health", timeout=10).status_code == 200  # meanwhile
        deadline = time.monotonic() + 20 * HEADER_TIMEOUT_S + 10
        closed = 0
        for sock in slow:
            sock.settimeout(max(deadline - time.monotonic(), 0.1))
            try:
                closed += sock.recv(1024) == b""  # EOF: the server closed it
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed == 50
        # a kept-alive client that sends whole requests is not dropped between them
        with httpx.Client(base_url=keyless.base_url) as http:
            for _ in range(3):
                assert http.get("/health").status_code == 200
    finally:
        for sock in slow:
            sock.close()

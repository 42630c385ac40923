"""API key, upload tokens, the body size cap, and the default bind address."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from llava_bridge.server.http.auth import Authenticator
from llava_bridge.server.settings import ServerSettings
from tests.server.conftest import APP, wait_completed
from tests.support.local_server import LocalServer, running_server

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def guarded() -> Iterator[LocalServer]:
    with running_server("--backend", "fake", "--api-key", KEY, "--max-body-mb", "0.05") as running:
        yield running


@pytest.mark.parametrize(
    "authorization",
    [None, "Key wrong", f"Bearer {KEY}", f"key{KEY}", f"Key {KEY}x", "Key", f"Basic {KEY}"],
)
def test_calls_without_the_right_key_get_401(
    guarded: LocalServer, authorization: str | None, data_uri: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.post(
        f"{guarded.base_url}/{APP}", json={"image_url": data_uri, "prompt": "?"}, headers=headers
    )
    assert response.status_code == 401
    assert "Authorization: Key" in response.json()["detail"]
    assert KEY not in response.text


def test_the_right_key_works_and_public_routes_need_none(guarded: LocalServer, data_uri: str) -> None:
    with httpx.Client(base_url=guarded.base_url, headers={"Authorization": f"Key {KEY}"}) as http:
        job = http.post(f"/{APP}", json={"image_url": data_uri, "prompt": "?"}).json()
        wait_completed(http, job["status_url"])
        assert http.get(job["response_url"]).status_code == 200
    assert httpx.get(f"{guarded.base_url}/openapi.json").status_code == 200
    assert httpx.get(f"{guarded.base_url}/health").status_code == 200
    assert httpx.get(job["status_url"]).status_code == 401


def test_upload_tokens_work_and_forged_ones_do_not(guarded: LocalServer, png_bytes: bytes) -> None:
    assert httpx.post(f"{guarded.base_url}/rest/storage/auth/token", json={}).status_code == 401
    token = httpx.post(
        f"{guarded.base_url}/rest/storage/auth/token", json={}, headers={"Authorization": f"Key {KEY}"}
    ).json()
    assert KEY not in token["token"]
    upload = f"{token['base_url']}/files/upload"
    good = httpx.post(upload, content=png_bytes, headers={"Authorization": f"Bearer {token['token']}"})
    assert good.status_code == 200
    assert httpx.get(good.json()["access_url"]).content == png_bytes  # file URLs are public, like fal's CDN
    expires, _, signature = token["token"].partition(".")
    forged = f"{int(expires) + 1000}.{signature}"
    bad = httpx.post(upload, content=png_bytes, headers={"Authorization": f"Bearer {forged}"})
    assert bad.status_code == 401


def test_bodies_over_the_cap_get_413_and_the_server_keeps_serving(guarded: LocalServer) -> None:
    headers = {"Authorization": f"Key {KEY}"}
    big = {"image_url": "data:image/png;base64," + "A" * 60_000, "prompt": "?"}
    response = httpx.post(f"{guarded.base_url}/{APP}", json=big, headers=headers)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"prompt": "?", "image_url": "'
        for _ in range(20):
            yield b"A" * 5000
        yield b'"}'

    streamed = httpx.post(
        f"{guarded.base_url}/{APP}", content=chunks(), headers={**headers, "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert httpx.get(f"{guarded.base_url}/health").status_code == 200


def test_default_bind_is_loopback_only(png_bytes: bytes) -> None:
    with running_server("--backend", "fake") as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        outward = _outward_address()
        if outward is None:
            pytest.skip("this machine has no non-loopback IPv4 address to try")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{outward}:{server.port}/health", timeout=2)


def _outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))
        address: str = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def test_keys_never_show_in_reprs() -> None:
    settings = ServerSettings(api_key=SecretStr(KEY), db_path=":memory:")
    assert KEY not in repr(settings)
    assert KEY not in repr(Authenticator(settings.api_key))
    assert Authenticator(None).key_ok(None)
    assert Authenticator(SecretStr(KEY)).key_ok(f"Key {KEY}")

"""The SSRF guard: what image URLs the server refuses to fetch, before and after redirects."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from llava_bridge.errors import InvalidImageError
from llava_bridge.server.images.fetch import ImageFetcher
from llava_bridge.server.images.ssrf import AddressGuard
from tests.server.conftest import APP, LocalHTTP, wait_completed
from tests.support.local_server import LocalServer, running_server

DNS = {
    "public.example": ["93.184.216.34"],
    "metadata.google.internal": ["169.254.169.254"],
    "intranet.example": ["10.1.2.3"],
    "mixed.example": ["93.184.216.34", "10.0.0.1"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "v6.example": ["2606:4700::6810:84e5"],
}


async def table_resolver(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise OSError(f"no such host {host}")
    return DNS[host]


def guard(**options: object) -> AddressGuard:
    return AddressGuard.from_settings(
        allow_private=bool(options.get("allow_private", False)),
        allowed_hosts=options.get("allowed_hosts", ()),  # type: ignore[arg-type]
        resolver=table_resolver,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "http://127.1.2.3:8080/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/x.png",
        "http://172.16.5.4/x.png",
        "http://192.168.1.1/x.png",
        "http://100.64.0.1/x.png",
        "http://0.0.0.0/x.png",
        "http://224.0.0.1/x.png",
        "http://240.0.0.1/x.png",
        "http://[::1]/x.png",
        "http://[fe80::1]/x.png",
        "http://[fd00:ec2::254]/x.png",
        "http://[::ffff:169.254.169.254]/x.png",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://intranet.example/x.png",
        "http://mixed.example/x.png",
        "http://mapped.example/x.png",
        "http://nowhere.example/x.png",
        "https://xn--/x.png",
        "ftp://public.example/x.png",
        "file:///etc/passwd",
        "gopher://public.example/",
    ],
)
async def test_guard_refuses(url: str) -> None:
    with pytest.raises(InvalidImageError):
        await guard().check(httpx.URL(url))


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://public.example/x.png", "93.184.216.34"),
        ("https://v6.example/x.png", "2606:4700::6810:84e5"),
        ("http://8.8.8.8/x.png", "8.8.8.8"),
    ],
)
async def test_guard_allows_public_addresses_and_pins_them(url: str, address: str) -> None:
    assert await guard().check(httpx.URL(url)) == address


async def test_allow_private_and_allowed_hosts() -> None:
    assert await guard(allow_private=True).check(httpx.URL("http://10.0.0.1/x")) == "10.0.0.1"
    narrow = guard(allowed_hosts=["127.0.0.1:8080", "intranet.example:80"])
    assert await narrow.check(httpx.URL("http://127.0.0.1:8080/x")) == "127.0.0.1"
    assert await narrow.check(httpx.URL("http://intranet.example/x")) == "10.1.2.3"
    with pytest.raises(InvalidImageError):
        await narrow.check(httpx.URL("http://127.0.0.1:8081/x"))  # another port of the same host


@pytest.fixture
async def fetcher_for() -> Iterator[object]:
    made: list[ImageFetcher] = []

    def make(*allowed: str, **options: object) -> ImageFetcher:
        fetcher = ImageFetcher(
            AddressGuard.from_settings(allow_private=False, allowed_hosts=allowed, resolver=_loopback_names),
            **options,  # type: ignore[arg-type]
        )
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        await fetcher.aclose()


async def _loopback_names(host: str, port: int) -> list[str]:
    return ["127.0.0.1"] if host == "images.test" else await table_resolver(host, port)


async def test_redirect_to_a_private_address_is_refused(
    http_pair: tuple[LocalHTTP, LocalHTTP],
    fetcher_for,  # type: ignore[no-untyped-def]
    png_bytes: bytes,
) -> None:
    allowed, private = http_pair
    private.hosts.clear()
    fetcher = fetcher_for(allowed.hostport)
    with pytest.raises(InvalidImageError, match="non-public"):
        await fetcher.fetch(allowed.redirect_to(private.url("/image.png")))
    with pytest.raises(InvalidImageError, match="non-public"):
        await fetcher.fetch(allowed.redirect_to("http://169.254.169.254/latest/meta-data/"))
    assert private.hosts == []  # never contacted
    # the same redirect is followed when its target is allowed too: the refusal above was the guard's
    both = fetcher_for(allowed.hostport, private.hostport)
    assert await both.fetch(allowed.redirect_to(private.url("/image.png"))) == png_bytes


async def test_fetch_connects_to_the_checked_address_with_the_original_host(
    http_pair: tuple[LocalHTTP, LocalHTTP],
    fetcher_for,  # type: ignore[no-untyped-def]
) -> None:
    server, _ = http_pair
    fetcher = fetcher_for(f"images.test:{server.port}")
    data = await fetcher.fetch(f"http://images.test:{server.port}/image.png")
    assert data.startswith(b"\x89PNG")
    assert server.hosts[-1] == f"images.test:{server.port}"


@pytest.mark.parametrize(
    ("path", "options", "message"),
    [
        ("/big", {"max_bytes": 1000}, "byte limit"),
        ("/chunked-big", {"max_bytes": 1000}, "byte limit"),
        ("/slow", {"timeout": 0.3}, "took over"),
        ("/loop", {"max_redirects": 3}, "redirected more than 3"),
        ("/missing", {}, "HTTP 404"),
    ],
)
async def test_fetch_limits(
    http_pair: tuple[LocalHTTP, LocalHTTP],
    fetcher_for,  # type: ignore[no-untyped-def]
    path: str,
    options: dict[str, object],
    message: str,
) -> None:
    server, _ = http_pair
    with pytest.raises(InvalidImageError, match=message):
        await fetcher_for(server.hostport, **options).fetch(server.url(path))


@pytest.fixture(scope="module")
def ssrf_server(http_pair: tuple[LocalHTTP, LocalHTTP]) -> Iterator[LocalServer]:
    allowed, _ = http_pair
    with running_server("--backend", "fake", "--allow-url-host", allowed.hostport) as running:
        yield running


@pytest.mark.parametrize(
    "image_url",
    [
        "http://127.0.0.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/x.png",
        "http://[::1]/",
        "http://localhost/x.png",
        "http://2130706433/x.png",  # 127.0.0.1 as one decimal number
        "http://0x7f.1/x.png",  # 127.0.0.1 in inet_aton shorthand
    ],
)
def test_server_refuses_private_urls_at_submit_and_run(ssrf_server: LocalServer, image_url: str) -> None:
    for path in (f"/{APP}", f"/run/{APP}"):
        response = httpx.post(f"{ssrf_server.base_url}{path}", json={"image_url": image_url, "prompt": "?"})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "image_url"]
        assert "non-public" in response.json()["detail"][0]["msg"]


def test_server_refuses_a_redirect_to_a_private_address(
    ssrf_server: LocalServer, http_pair: tuple[LocalHTTP, LocalHTTP]
) -> None:
    allowed, private = http_pair
    private.hosts.clear()
    with httpx.Client(base_url=ssrf_server.base_url, timeout=10) as http:
        ok = http.post(f"/run/{APP}", json={"image_url": allowed.url("/image.png"), "prompt": "?"})
        assert ok.status_code == 200  # the allowed host itself is fetched
        for target in (private.url("/image.png"), "http://169.254.169.254/latest/meta-data/"):
            job = http.post(f"/{APP}", json={"image_url": allowed.redirect_to(target), "prompt": "?"}).json()
            wait_completed(http, job["status_url"])
            result = http.get(job["response_url"])
            assert result.status_code == 422
            assert "non-public" in result.json()["detail"][0]["msg"]
        assert private.hosts == []
        assert http.get("/health").status_code == 200

"""Images on the wire: URLs as is, small images inline, big ones resized and uploaded once."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from llava_bridge import AuthenticationError, ImageInput, InvalidRequestError, ResizePolicy, VisionRequest
from llava_bridge.backends._transport.effects import Compute, HttpRequest, Sleep
from llava_bridge.backends._transport.flows import Deadline
from llava_bridge.backends.fal.backend import FalBackend
from llava_bridge.backends.fal.settings import FalConfig
from llava_bridge.backends.fal.uploads import StorageState, image_url_flow
from tests.fal.conftest import photo_bytes
from tests.fal.fal_test_server import FalTestServer

PHOTO = photo_bytes(1600, 1200)


def test_a_big_photo_is_downscaled_and_uploaded_once(server: FalTestServer, backend: FalBackend) -> None:
    first = backend.generate(VisionRequest(prompt="one", image=PHOTO))
    second = backend.generate(VisionRequest(prompt="two", image=PHOTO))

    assert first.text.startswith("I see a 896x672 image") and second.text.startswith("I see a 896x672 image")
    assert len(server.calls("token")) == 1 and len(server.calls("cdn_upload")) == 1
    upload = server.calls("cdn_upload")[0]
    assert upload.headers["authorization"] == "Bearer cdn-token"
    assert upload.headers["content-type"] == "image/jpeg" and len(upload.body) < len(PHOTO)
    urls = {c.json()["image_url"] for c in server.calls("submit")}
    assert len(urls) == 1 and next(iter(urls)).startswith(server.url + "/cdn/files/")
    assert backend.uploads == 1


def test_the_cdn_token_is_reused_for_other_images(server: FalTestServer, backend: FalBackend) -> None:
    backend.generate(VisionRequest(prompt="one", image=PHOTO))
    backend.generate(VisionRequest(prompt="two", image=photo_bytes(1500, 1100)))

    assert len(server.calls("token")) == 1 and len(server.calls("cdn_upload")) == 2


def test_a_small_image_goes_inline(server: FalTestServer, backend: FalBackend) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (10, 200, 30)).save(buffer, format="PNG")

    result = backend.generate(VisionRequest(prompt="hi", image=buffer.getvalue()))

    assert result.text.startswith("I see a 200x100 image")
    assert server.calls("submit")[0].json()["image_url"].startswith("data:image/png;base64,")
    assert not server.calls("cdn_upload")


def test_an_http_url_is_passed_as_is(server: FalTestServer, backend: FalBackend) -> None:
    url = "https://example.com/cat.jpg"
    backend.generate(VisionRequest(prompt="hi", image=url))

    assert server.calls("submit")[0].json()["image_url"] == url


def test_paths_and_pil_images_are_sent_too(
    server: FalTestServer, backend: FalBackend, tmp_path: Path
) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(PHOTO)
    from_path = backend.generate(VisionRequest(prompt="hi", image=path))
    from_pil = backend.generate(VisionRequest(prompt="hi", image=Image.new("RGB", (300, 200), (1, 2, 3))))

    assert from_path.text.startswith("I see a 896x672") and from_pil.text.startswith("I see a 300x200")


@pytest.mark.parametrize(
    ("route", "fault"),
    [
        ("cdn_upload", {"code": 403, "body": {"detail": "no"}}),
        ("token", {"code": 401, "body": {"detail": "no"}}),
    ],
)
def test_a_failed_cdn_upload_falls_back_to_initiate_and_put(
    server: FalTestServer, backend: FalBackend, route: str, fault: dict[str, object]
) -> None:
    server.fail(route, "http", **fault)

    result = backend.generate(VisionRequest(prompt="hi", image=PHOTO))

    assert result.text.startswith("I see a 896x672")
    initiate = server.calls("initiate")[0]
    assert initiate.query == {"storage_type": "gcs"} and initiate.json()["content_type"] == "image/jpeg"
    assert len(server.calls("gcs_put")) == 1 and "authorization" not in server.calls("gcs_put")[0].headers


def test_a_fallback_that_worked_is_a_warning(
    server: FalTestServer, make_backend: Callable[..., FalBackend], caplog: pytest.LogCaptureFixture
) -> None:
    server.fail("cdn_upload", "http", code=500, body={"detail": "down"}, times=2)

    make_backend(max_retries=1).generate(VisionRequest(prompt="hi", image=PHOTO))

    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == ["CDN upload failed (ServerError); the storage upload fallback was used"]


def test_a_refused_key_is_one_error_without_a_fallback_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "LLAVA_FAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with FalTestServer(require_key="right") as server, FalBackend(base_url=server.url) as backend:
        with pytest.raises(AuthenticationError, match=r"\(from base_url= in code\) got no key"):
            backend.generate(VisionRequest(prompt="hi", image=PHOTO))
        assert server.calls("token") and not server.calls("submit")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_resizing_can_be_turned_off(server: FalTestServer, make_backend: Callable[..., FalBackend]) -> None:
    result = make_backend(resize=None).generate(VisionRequest(prompt="hi", image=PHOTO))

    assert result.text.startswith("I see a 1600x1200")
    assert server.calls("cdn_upload")[0].body == PHOTO


def test_the_resize_policy_and_threshold_are_the_backends(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    backend = make_backend(
        resize=ResizePolicy(short_side=400, max_long_side=800), inline_threshold=10_000_000
    )

    assert backend.generate(VisionRequest(prompt="hi", image=PHOTO)).text.startswith("I see a 533x400")
    assert not server.calls("cdn_upload")


def test_text_only_requests_send_a_small_grey_placeholder(server: FalTestServer, backend: FalBackend) -> None:
    backend.generate(VisionRequest(prompt="no picture"))

    image_url = server.calls("submit")[0].json()["image_url"]
    data = server.image_bytes(image_url)
    assert data is not None and len(image_url) < 400
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (64, 64) and image.convert("RGB").getpixel((10, 10)) == (128, 128, 128)


def test_text_only_can_be_an_error_instead(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    with pytest.raises(InvalidRequestError, match="text_only='placeholder'"):
        make_backend(text_only="error").generate(VisionRequest(prompt="no picture"))
    assert not server.requests


def test_the_upload_cache_is_bounded() -> None:
    state = StorageState(max_entries=2)
    for key in ("a", "b", "c"):
        state.put(key, f"url-{key}")
    state.get("b")
    state.put("d", "url-d")

    assert state.get("a") is None and state.get("c") is None
    assert state.get("b") == "url-b" and state.get("d") == "url-d"


def test_the_same_image_by_value_hits_the_cache(server: FalTestServer, backend: FalBackend) -> None:
    backend.generate(VisionRequest(prompt="hi", image=ImageInput.from_bytes(PHOTO)))
    backend.generate(VisionRequest(prompt="hi", image=PHOTO))

    assert len(server.calls("cdn_upload")) == 1


def test_a_medium_image_goes_inline_once_then_is_uploaded_when_it_comes_back(
    server: FalTestServer, backend: FalBackend
) -> None:
    medium = photo_bytes(400, 300, quality=80)
    assert 8 * 1024 < len(medium) < 128 * 1024

    for _ in range(3):
        backend.generate(VisionRequest(prompt="again", image=medium))

    sent = [c.json()["image_url"] for c in server.calls("submit")]
    assert sent[0].startswith("data:image/jpeg;base64,")
    assert sent[1] == sent[2] and sent[1].startswith(server.url + "/cdn/files/")
    assert len(server.calls("cdn_upload")) == 1 and server.calls("cdn_upload")[0].body == medium


def test_a_thumbnail_is_always_inline(server: FalTestServer, make_backend: Callable[..., FalBackend]) -> None:
    backend = make_backend(inline_threshold=1024)
    for _ in range(2):
        backend.generate(VisionRequest(prompt="tiny"))  # the 64x64 placeholder
    backend.generate(VisionRequest(prompt="big", image=PHOTO))

    assert [c.json()["image_url"][:5] for c in server.calls("submit")] == ["data:", "data:", "http:"]


def test_inline_threshold_zero_uploads_everything(
    server: FalTestServer, make_backend: Callable[..., FalBackend]
) -> None:
    make_backend(inline_threshold=0).generate(VisionRequest(prompt="tiny"))

    assert server.calls("submit")[0].json()["image_url"].startswith(server.url + "/cdn/files/")


async def test_concurrent_asks_about_one_new_photo_upload_it_once(
    server: FalTestServer, backend: FalBackend
) -> None:
    server.fail("cdn_upload", "stall", seconds=0.2)  # the others arrive while it uploads

    results = await asyncio.gather(
        *(backend.agenerate(VisionRequest(prompt=f"q{i}", image=PHOTO)) for i in range(8))
    )

    assert all(result.text.startswith("I see a 896x672 image") for result in results)
    assert len(server.calls("cdn_upload")) == 1 and backend.uploads == 1
    assert len({c.json()["image_url"] for c in server.calls("submit")}) == 1


def test_threads_asking_about_one_new_photo_upload_it_once(
    server: FalTestServer, backend: FalBackend
) -> None:
    server.fail("cdn_upload", "stall", seconds=0.2)

    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda i: backend.generate(VisionRequest(prompt=f"q{i}", image=PHOTO)), range(4))
        )

    assert all(result.text.startswith("I see a 896x672 image") for result in results)
    assert len(server.calls("cdn_upload")) == 1


def test_a_call_waiting_on_an_upload_that_failed_uploads_the_image_itself() -> None:
    state = StorageState()
    config = FalConfig(queue_url="http://q", run_url="http://r", rest_url="http://rest", cdn_url="http://cdn")
    image = ImageInput.from_bytes(PHOTO)
    waiter = image_url_flow(config, Deadline(), state, image, policy=ResizePolicy(), inline_threshold=0)
    compute = next(waiter)
    assert isinstance(compute, Compute)
    assert state.claim_upload(image.sha256)  # another call is uploading it

    assert isinstance(waiter.send(compute.function()), Sleep)
    assert isinstance(waiter.send(None), Sleep)  # still waiting
    state.end_upload(image.sha256)  # ...and that upload failed: no URL was stored

    effect = waiter.send(None)
    assert isinstance(effect, HttpRequest) and effect.label == "storage token"  # its own upload
    assert not state.claim_upload(image.sha256)  # now held by the waiter
    waiter.close()
    assert state.claim_upload(image.sha256)  # given up when its flow was closed


def test_a_call_whose_encode_ends_after_another_upload_finished_reuses_its_url() -> None:
    """The race behind duplicate uploads, step by step: no timing involved."""
    state = StorageState()
    config = FalConfig(queue_url="http://q", run_url="http://r", rest_url="http://rest", cdn_url="http://cdn")
    image = ImageInput.from_bytes(PHOTO)
    late = image_url_flow(config, Deadline(), state, image, policy=ResizePolicy(), inline_threshold=0)
    compute = next(late)  # looked in the cache (empty), now encoding
    assert isinstance(compute, Compute)
    assert state.claim_upload(image.sha256)  # meanwhile another call uploads it...
    state.put(image.sha256, "http://cdn/files/first.jpg")
    state.end_upload(image.sha256)  # ...and finishes before this encode ends

    with pytest.raises(StopIteration) as done:
        late.send(compute.function())
    assert done.value.value == "http://cdn/files/first.jpg"  # no second upload
    assert state.claim_upload(image.sha256)  # and the claim was given back

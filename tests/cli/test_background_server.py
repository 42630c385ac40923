"""BackgroundServer: the real server in a thread, as notebooks and `make demo` use it."""

from __future__ import annotations

import asyncio

import httpx
from PIL import Image

from llava_bridge import FakeBackend, FalBackend, ImageInput, VisionRequest
from llava_bridge.server.background import BackgroundServer


def test_fal_backend_through_a_background_server() -> None:
    image = Image.new("RGB", (64, 40), (20, 40, 230))
    fake = FakeBackend.image_facts()
    with BackgroundServer(fake) as server, FalBackend(base_url=server.url) as backend:
        request = VisionRequest(prompt="What is it?", image=ImageInput.from_pil(image))
        assert backend.generate(request).text == "(fake) A 64x40 image, mostly blue."
        assert asyncio.run(backend.agenerate(request)).text == "(fake) A 64x40 image, mostly blue."
        assert len(fake.history) == 2
        url = server.url
    try:
        httpx.get(url + "/openapi.json", timeout=2)
    except httpx.TransportError:
        pass
    else:
        raise AssertionError("the server still answers after stop()")

"""Phone photos through the LlamaIndex adapters arrive upright, as JPEG or PNG: a portrait JPEG
stored sideways with an EXIF orientation, HEIC bytes and files, and a SimpleDirectoryReader folder."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_index.core import SimpleDirectoryReader
from llama_index.core.llms import ChatMessage, ImageBlock, MessageRole, TextBlock
from PIL import Image

from llava_bridge.llama_index import ImageDescriber, LlavaLLM
from tests.fal.fal_test_server import FalTestServer
from tests.support.images import MARKER, sideways_photo

pillow_heif = pytest.importorskip("pillow_heif", reason="HEIC tests need the [heif] extra (pillow-heif)")


@pytest.fixture(scope="module")
def server() -> Iterator[FalTestServer]:
    with FalTestServer() as running:
        yield running


@pytest.fixture
def fal(server: FalTestServer, monkeypatch: pytest.MonkeyPatch) -> FalTestServer:
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "LLAVA_FAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    server.reset()
    return server


def heic_photo() -> bytes:
    pillow_heif.register_heif_opener()
    return sideways_photo("HEIF", quality=90)


def received(server: FalTestServer) -> list[Image.Image]:
    """The pictures the server got, as stored (no orientation applied)."""
    pictures = []
    for call in server.calls("submit"):
        data = server.image_bytes(call.json()["image_url"])
        assert data is not None
        picture = Image.open(io.BytesIO(data))
        assert picture.format in ("JPEG", "PNG")
        assert picture.getexif().get(0x0112, 1) == 1  # no turn left for anyone to apply
        pictures.append(picture.convert("RGB"))
    return pictures


def assert_upright(picture: Image.Image) -> None:
    width, height = picture.size
    assert height > width, "portrait"
    top = picture.getpixel((width // 2, height // 10))
    bottom = picture.getpixel((width // 2, height * 9 // 10))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert sum(abs(a - b) for a, b in zip(top, MARKER, strict=True)) < 90, (
        f"the red mark is not on top: {top}"
    )
    assert bottom[2] > 150 and bottom[0] < 90


@pytest.mark.parametrize("kind", ["jpeg-path", "jpeg-bytes", "heic-path", "heic-bytes"])
async def test_llava_llm_sends_phone_photos_upright(fal: FalTestServer, tmp_path: Path, kind: str) -> None:
    data = heic_photo() if kind.startswith("heic") else sideways_photo("JPEG", quality=95)
    path = tmp_path / ("photo.heic" if kind.startswith("heic") else "photo.jpg")
    path.write_bytes(data)
    block = (
        ImageBlock(path=path)
        if kind.endswith("path")
        else ImageBlock(image=data, image_mimetype="image/jpeg")
    )
    llm = LlavaLLM(base_url=fal.url, api_key="test")
    await llm.achat([ChatMessage(role=MessageRole.USER, blocks=[block, TextBlock(text="What is on top?")])])
    [picture] = received(fal)
    assert_upright(picture)


def test_simple_directory_reader_folder_of_phone_photos(fal: FalTestServer, tmp_path: Path) -> None:
    folder = tmp_path / "camera-roll"
    folder.mkdir()
    (folder / "IMG_0001.HEIC").write_bytes(heic_photo())
    (folder / "IMG_0002.jpg").write_bytes(sideways_photo("JPEG", quality=95))
    documents = SimpleDirectoryReader(str(folder)).load_data()
    nodes = ImageDescriber(base_url=fal.url, api_key="test")(documents)
    assert len(nodes) == 2
    assert all("image_sha256" in node.metadata for node in nodes)
    assert all("\x00" not in node.get_content() for node in nodes)
    pictures = received(fal)
    assert len(pictures) == 2
    for picture in pictures:
        assert_upright(picture)

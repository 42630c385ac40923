"""langchain-community's PDF loader describes a PDF's images with ChatLlava, over real HTTP.

`LLMImageBlobParser` labels every image `data:image/jpeg` although it encodes PNG; the
bytes decide the type, so each image is described. The server's fake model answers
from the image it received (size and colour), so each page's text shows that its own
image arrived.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from llava_bridge.langchain import ChatLlava
from tests.support.local_server import LocalServer, running_server

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # langchain-community announces its sunset
    from langchain_community.document_loaders import PyPDFLoader
    from langchain_community.document_loaders.parsers import LLMImageBlobParser


@pytest.fixture(scope="module")
def facts_server() -> Iterator[LocalServer]:
    """`llava-bridge serve` whose fake model describes each image by its size and colour."""
    with running_server(
        "--backend", "fake", "--fake-answers", "llava_bridge.backends.fake:describe_image_facts"
    ) as server:
        yield server


def two_image_pdf(path: Path) -> Path:
    """A two-page PDF, one photo-like image per page (Pillow writes them as JPEG XObjects)."""
    red = Image.new("RGB", (320, 240), (200, 30, 30))
    blue = Image.new("RGB", (200, 300), (30, 40, 210))
    red.save(path, "PDF", save_all=True, append_images=[blue], resolution=72)
    return path


def test_pdf_loader_describes_each_image_with_chat_llava(facts_server: LocalServer, tmp_path: Path) -> None:
    llm = ChatLlava(base_url=facts_server.base_url, api_key="k", max_retries=0)
    loader = PyPDFLoader(
        str(two_image_pdf(tmp_path / "two.pdf")),
        extract_images=True,
        images_parser=LLMImageBlobParser(model=llm),
    )
    documents = loader.load()
    assert len(documents) == 2
    assert "A 320x240 image, mostly red" in documents[0].page_content
    assert "A 200x300 image, mostly blue" in documents[1].page_content

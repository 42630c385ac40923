"""ImageDescriber on images as LlamaIndex users have them: a folder read by SimpleDirectoryReader,
byte-only ImageNodes behind an IngestionCache, and a configured LLM instead of a backend."""

from __future__ import annotations

import base64
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import SimpleDirectoryReader
from llama_index.core.ingestion import IngestionCache, IngestionPipeline
from llama_index.core.ingestion.pipeline import get_transformation_hash
from llama_index.core.llms import ChatMessage, ImageBlock, MessageRole
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.schema import ImageNode, MetadataMode

from llava_bridge import ConfigurationError, FakeBackend, ImageInput
from llava_bridge.llama_index import (
    ImageDescriber,
    LlavaLLM,
    UnidentifiedImageError,
    identify_images,
)

from .conftest import ColourServer, PicklableFake, colour_png, describe_colour

pytestmark = pytest.mark.usefixtures("no_fal_environment")


@pytest.fixture
def no_fal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "LLAVA_FAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def photo_folder(folder: Path) -> Path:
    """Two PNGs, a JPEG, a text note and a binary file, as a user's folder might hold."""
    folder.mkdir()
    (folder / "beach.png").write_bytes(colour_png("yellow", "blue"))
    (folder / "forest.png").write_bytes(colour_png("green", "brown"))
    ImageInput.from_bytes(colour_png("navy", "grey")).to_pil().save(folder / "night.jpg", quality=95)
    (folder / "notes.md").write_text("# Holiday\nThree photos from the trip.\n")
    (folder / "backup.bin").write_bytes(os.urandom(2048) + b"\x00" * 64)
    return folder


def test_simple_directory_reader_folder_through_a_cached_pipeline(
    colour_app: ColourServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    documents = SimpleDirectoryReader(str(photo_folder(tmp_path / "photos"))).load_data()
    by_name = {d.metadata["file_name"]: d for d in documents}
    assert by_name["beach.png"].metadata["file_type"] == "image/png"
    assert "\x00" in by_name["beach.png"].text  # the reader gives the raw bytes as text

    describer = ImageDescriber(base_url=colour_app.url, api_key="test")
    pipeline = IngestionPipeline(transformations=[describer], cache=IngestionCache())
    before = len(colour_app.backend.history)
    with caplog.at_level(logging.WARNING, logger="llava_bridge"):
        nodes = pipeline.run(documents=documents)
    out = {n.metadata["file_name"]: n for n in nodes}
    assert out["beach.png"].get_content() == "A picture dominated by the colour yellow."
    assert out["forest.png"].get_content() == "A picture dominated by the colour green."
    assert out["night.jpg"].get_content() == "A picture dominated by the colour navy."
    assert out["notes.md"].get_content().startswith("# Holiday")
    sha = ImageInput.from_path(tmp_path / "photos" / "beach.png").sha256
    assert out["beach.png"].metadata["image_sha256"] == sha
    assert "image_sha256" not in out["beach.png"].get_content(metadata_mode=MetadataMode.EMBED)
    assert len(colour_app.backend.history) - before == 3
    assert "1 node(s) (backup.bin) have binary text" in caplog.text

    again = SimpleDirectoryReader(str(tmp_path / "photos")).load_data()
    cached = pipeline.run(documents=again)
    assert len(colour_app.backend.history) - before == 3  # served from the cache
    assert sorted(n.get_content() for n in cached) == sorted(n.get_content() for n in nodes)


def byte_only(name: str) -> ImageNode:
    """An ImageNode holding only image bytes, with the same text and metadata as any other."""
    return ImageNode(image=base64.b64encode(colour_png(name)).decode(), metadata={"source": "upload"})


def test_byte_only_nodes_never_get_another_images_description_from_the_cache(
    colour_app: ColourServer,
) -> None:
    pipeline = IngestionPipeline(
        transformations=[ImageDescriber(base_url=colour_app.url, api_key="test")], cache=IngestionCache()
    )
    teal, orange = byte_only("teal"), byte_only("orange")
    assert teal.get_content(metadata_mode=MetadataMode.ALL) == orange.get_content(
        metadata_mode=MetadataMode.ALL
    )

    with pytest.raises(UnidentifiedImageError, match=r"identify_images\(nodes\)"):
        pipeline.run(nodes=[teal])
    assert pipeline.cache.cache.get_all(pipeline.cache.collection) == {}  # nothing was cached

    before = len(colour_app.backend.history)
    [first] = pipeline.run(nodes=identify_images([byte_only("teal")]))
    [second] = pipeline.run(nodes=identify_images([byte_only("orange")]))
    [repeat] = pipeline.run(nodes=identify_images([byte_only("teal")]))
    assert first.get_content() == "A picture dominated by the colour teal."
    assert second.get_content() == "A picture dominated by the colour orange."
    assert repeat.get_content() == first.get_content()
    assert len(colour_app.backend.history) - before == 2  # the repeat came from the cache


def test_identify_images_names_paths_and_urls(tmp_path: Path) -> None:
    path = tmp_path / "lime.png"
    path.write_bytes(colour_png("lime"))
    by_path, by_url, missing = identify_images(
        [
            ImageNode(image_path=str(path)),
            ImageNode(image_url="https://192.0.2.1/a.png"),
            ImageNode(image_path=str(tmp_path / "gone.png")),
        ]
    )
    assert by_path.metadata["image_sha256"] == ImageInput.from_path(path).sha256
    assert by_url.metadata == {"image_url": "https://192.0.2.1/a.png"}
    assert missing.metadata == {"image_path": str(tmp_path / "gone.png")}
    assert "image_sha256" in by_path.excluded_llm_metadata_keys


def test_describer_takes_a_configured_llava_llm(colour_backend: FakeBackend) -> None:
    llm = LlavaLLM(backend=colour_backend, max_new_tokens=17, temperature=0.3)
    describer = ImageDescriber(llm=llm)
    assert describer.model_name == "fake-colour-llava" and describer.backend is colour_backend
    [node] = describer(identify_images([byte_only("pink")]))
    assert node.get_content() == "A picture dominated by the colour pink."
    [request] = colour_backend.history
    assert (request.max_new_tokens, request.temperature) == (17, 0.3)

    nodes = [ImageNode(image_path="/data/a.png", metadata={"file_path": "/data/a.png"})]
    other = ImageDescriber(llm=LlavaLLM(backend=colour_backend, max_new_tokens=18))
    assert get_transformation_hash(nodes, describer) != get_transformation_hash(nodes, other)


async def test_describer_takes_any_llm_that_reads_image_blocks() -> None:
    seen: list[ChatMessage] = []

    def vision_llm(messages: list[ChatMessage], **kwargs: Any) -> ChatMessage:
        seen.extend(messages)
        [image] = [b for b in messages[-1].blocks if isinstance(b, ImageBlock)]
        return ChatMessage(role=MessageRole.ASSISTANT, content=f"  {describe_colour_of_block(image)}\n")

    describer = ImageDescriber(llm=MockFunctionCallingLLM(response_generator=vision_llm), prompt="Colour?")
    [node] = await describer.acall(identify_images([byte_only("maroon")]))
    assert node.get_content() == "A picture dominated by the colour maroon."
    assert seen[-1].blocks[-1].text == "Colour?"  # type: ignore[union-attr]


def describe_colour_of_block(block: ImageBlock) -> str:
    from llava_bridge.llama_index.images import image_from_block
    from llava_bridge.types import VisionRequest

    return describe_colour(VisionRequest(prompt="Colour?", image=image_from_block(block)))


@pytest.mark.parametrize(
    "options",
    [
        {"backend": FakeBackend()},
        {"max_new_tokens": 10},
        {"temperature": 0.5},
        {"api_key": "sk-x"},
        {"timeout": 5},
    ],
    ids=lambda o: next(iter(o)),
)
def test_llm_with_backend_settings_is_refused(options: dict[str, Any], colour_backend: FakeBackend) -> None:
    with pytest.raises(ConfigurationError, match="configure the LLM instead"):
        ImageDescriber(llm=LlavaLLM(backend=colour_backend), **options)
    with pytest.raises(ConfigurationError, match="must be a LlamaIndex LLM"):
        ImageDescriber(llm="gpt")  # type: ignore[arg-type]


def test_describer_with_an_llm_pickles() -> None:
    describer = ImageDescriber(llm=LlavaLLM(backend=PicklableFake(describe_colour), max_new_tokens=21))
    clone = pickle.loads(pickle.dumps(describer))
    assert isinstance(clone.llm, LlavaLLM) and clone.llm.max_new_tokens == 21
    [node] = clone(identify_images([byte_only("olive")]))
    assert node.get_content() == "A picture dominated by the colour olive."


def test_metadata_output_drops_a_readers_bytes_as_text(tmp_path: Path, colour_backend: FakeBackend) -> None:
    folder = photo_folder(tmp_path / "photos")
    documents = SimpleDirectoryReader(input_files=[str(folder / "forest.png")]).load_data()
    assert "\x00" in documents[0].text
    [node] = ImageDescriber(backend=colour_backend, output="metadata")(documents)
    assert node.get_content() == ""
    assert node.metadata["image_description"] == "A picture dominated by the colour green."

"""ImageDescriber in an IngestionPipeline: retrieval by description, cache key, errors, concurrency."""

from __future__ import annotations

import base64
import hashlib
import math
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.ingestion import IngestionCache, IngestionPipeline
from llama_index.core.ingestion.pipeline import get_transformation_hash
from llama_index.core.schema import BaseNode, Document, ImageDocument, ImageNode, TextNode

from llava_bridge import (
    AuthenticationError,
    ConfigurationError,
    FakeBackend,
    InvalidImageError,
    MissingCredentialsError,
)
from llava_bridge.llama_index import ImageDescriber, ImageDescriptionError, identify_images

from .conftest import PALETTE, InFlightCounter, PicklableFake, colour_png, describe_colour


class KeywordEmbedding(MockEmbedding):
    """MockEmbedding with meaning: a normalised bag of words, each word hashed to one dimension.

    (MockEmbedding's own vectors are all the same, so nothing could be retrieved by them.)
    """

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self.embed_dim
        for word in re.findall(r"[a-z]+", text.lower()):
            vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.embed_dim] += 1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)


def twenty_images(folder: Path) -> list[BaseNode]:
    """One image per palette colour (with a stripe of the next colour), as every node kind.

    File names do not name the colour, and `file_path` is kept out of the embedding
    (but in the metadata, which is what the ingestion cache keys on).
    """
    names = list(PALETTE)
    nodes: list[BaseNode] = []
    for index, name in enumerate(names):
        png = colour_png(name, names[(index + 1) % len(names)])
        path = folder / f"img_{index:02d}.png"
        path.write_bytes(png)
        metadata = {"file_path": str(path)}
        kind = index % 4
        node: BaseNode
        if kind == 0:
            node = ImageDocument(image_path=str(path), metadata=metadata)
        elif kind == 1:
            node = ImageNode(image=base64.b64encode(png).decode(), metadata=metadata)
        elif kind == 2:
            node = ImageNode(image_path=str(path), metadata=metadata)
        else:
            node = TextNode(text="", metadata={**metadata, "image_path": str(path)})
        node.excluded_embed_metadata_keys = ["file_path", "image_path"]
        nodes.append(node)
    return nodes


def test_pipeline_describes_twenty_images_and_retrieval_finds_each(tmp_path: Path) -> None:
    backend = FakeBackend(describe_colour)
    embed = KeywordEmbedding(embed_dim=512)
    pipeline = IngestionPipeline(transformations=[ImageDescriber(backend=backend, num_workers=4), embed])
    nodes = pipeline.run(nodes=twenty_images(tmp_path))
    assert len(nodes) == 20 and len(backend.history) == 20
    assert all(node.embedding for node in nodes)

    index = VectorStoreIndex(nodes, embed_model=embed)
    retriever = index.as_retriever(similarity_top_k=1)
    for position, name in enumerate(PALETTE):
        [hit] = retriever.retrieve(f"the {name} picture")
        assert hit.node.metadata["file_path"] == str(tmp_path / f"img_{position:02d}.png"), name
        assert hit.node.get_content() == f"A picture dominated by the colour {name}."


async def test_async_pipeline_gives_the_same_descriptions(tmp_path: Path) -> None:
    sync_nodes = IngestionPipeline(
        transformations=[ImageDescriber(backend=FakeBackend(describe_colour))]
    ).run(nodes=twenty_images(tmp_path))
    async_nodes = await IngestionPipeline(
        transformations=[ImageDescriber(backend=FakeBackend(describe_colour))]
    ).arun(nodes=twenty_images(tmp_path))
    assert [n.get_content() for n in sync_nodes] == [n.get_content() for n in async_nodes]
    assert len({n.get_content() for n in sync_nodes}) == 20


def test_second_run_is_served_from_the_cache(tmp_path: Path) -> None:
    backend = FakeBackend(describe_colour)
    cache = IngestionCache()
    first = IngestionPipeline(transformations=[ImageDescriber(backend=backend)], cache=cache)
    first.run(nodes=twenty_images(tmp_path)[:5])
    assert len(backend.history) == 5
    # A new pipeline, a new backend object with the same settings, the same images: no calls.
    other_backend = FakeBackend(describe_colour)
    second = IngestionPipeline(transformations=[ImageDescriber(backend=other_backend)], cache=cache)
    again = second.run(nodes=twenty_images(tmp_path)[:5])
    assert other_backend.history == []
    assert again[0].get_content() == "A picture dominated by the colour red."
    # A different prompt is a different key: the images are described again.
    third = IngestionPipeline(
        transformations=[ImageDescriber(backend=other_backend, prompt="What colour?")], cache=cache
    )
    third.run(nodes=twenty_images(tmp_path)[:5])
    assert len(other_backend.history) == 5


def test_cache_key_holds_settings_not_clients() -> None:
    nodes = [ImageNode(image_path="/data/a.png", metadata={"file_path": "/data/a.png"})]

    def key(describer: ImageDescriber) -> str:
        return get_transformation_hash(nodes, describer)

    base = key(ImageDescriber(backend=FakeBackend()))
    assert key(ImageDescriber(backend=FakeBackend())) == base  # another backend object
    assert (
        key(ImageDescriber(backend=FakeBackend(), num_workers=16, show_progress=True, in_place=False)) == base
    )
    for change in (
        {"prompt": "Another prompt"},
        {"output": "metadata"},
        {"max_new_tokens": 64},
        {"temperature": 0.5},
        {"on_error": "skip"},
        {"image_metadata_keys": ["file_path"]},
    ):
        assert key(ImageDescriber(backend=FakeBackend(), **change)) != base, change
    assert key(ImageDescriber(backend=FakeBackend(model_name="another-model"))) != base


def test_pickles_with_its_backend_and_settings() -> None:
    describer = ImageDescriber(backend=PicklableFake(describe_colour), prompt="Colour?", num_workers=2)
    clone = pickle.loads(pickle.dumps(describer))
    assert isinstance(clone.backend, PicklableFake)
    assert (clone.prompt, clone.num_workers) == ("Colour?", 2)
    [node] = clone(identify_images([ImageNode(image=base64.b64encode(colour_png("teal")).decode())]))
    assert node.get_content() == "A picture dominated by the colour teal."


def test_unpicklable_backend_gets_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="run it without num_workers"):
        pickle.dumps(ImageDescriber(backend=FakeBackend()))


def test_metadata_output_and_untouched_text_nodes(tmp_path: Path, red_path: Path) -> None:
    plain = TextNode(text="no image here", metadata={"file_path": "/notes.txt"})
    captioned = TextNode(text="Figure 1.", metadata={"image_path": str(red_path)})
    document = Document(text="just text")
    describer = ImageDescriber(
        backend=FakeBackend(describe_colour), output="metadata", metadata_key="caption"
    )
    out = describer([plain, captioned, document])
    assert [n.get_content() for n in out] == ["no image here", "Figure 1.", "just text"]
    assert out[1].metadata["caption"] == "A picture dominated by the colour red."
    assert "caption" not in out[0].metadata and "caption" not in out[2].metadata


def test_text_output_appends_to_existing_text(red_path: Path) -> None:
    captioned = TextNode(text="Figure 1.", metadata={"image_path": str(red_path)})
    [out] = ImageDescriber(backend=FakeBackend(describe_colour))([captioned])
    assert out.get_content() == "Figure 1.\n\nA picture dominated by the colour red."


def test_not_in_place_leaves_the_input_alone(red_png: bytes) -> None:
    node = ImageNode(image=base64.b64encode(red_png).decode(), metadata={"image_id": "red"})
    [out] = ImageDescriber(backend=FakeBackend(describe_colour), in_place=False)([node])
    assert node.get_content() == "" and out.get_content().endswith("red.")


def _mixed(tmp_path: Path) -> list[BaseNode]:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return identify_images(
        [
            ImageNode(image=base64.b64encode(colour_png("navy")).decode(), id_="good-1"),
            ImageNode(image_path=str(broken), id_="bad-1"),
            TextNode(text="", metadata={"image_path": str(tmp_path / "missing.png")}, id_="bad-2"),
            ImageNode(image=base64.b64encode(colour_png("lime")).decode(), id_="good-2"),
        ]
    )


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_failures_are_collected_and_raised_together(tmp_path: Path, asynchronous: bool) -> None:
    backend = FakeBackend(describe_colour)
    describer = ImageDescriber(backend=backend)
    with pytest.raises(ImageDescriptionError, match="2 of 4 images could not be described") as caught:
        await describer.acall(_mixed(tmp_path)) if asynchronous else describer(_mixed(tmp_path))
    failures = caught.value.failures
    assert [f.node_id for f in failures] == ["bad-1", "bad-2"]
    assert all(isinstance(f.error, InvalidImageError) for f in failures)
    assert "on_error='skip'" in str(caught.value)
    assert len(backend.history) == 2  # the good ones were still described


def test_skip_drops_failed_nodes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = ImageDescriber(backend=FakeBackend(describe_colour), on_error="skip")(_mixed(tmp_path))
    assert [n.node_id for n in out] == ["good-1", "good-2"]
    assert "2 of 4 images could not be described" in caplog.text


def test_keep_marks_failed_nodes_out_of_the_embedding(tmp_path: Path) -> None:
    out = ImageDescriber(backend=FakeBackend(describe_colour), on_error="keep")(_mixed(tmp_path))
    assert [n.node_id for n in out] == ["good-1", "bad-1", "bad-2", "good-2"]
    bad = out[1]
    assert bad.metadata["image_description_error"].startswith("InvalidImageError:")
    assert "image_description_error" in bad.excluded_embed_metadata_keys
    assert out[0].get_content().endswith("navy.")


@pytest.mark.parametrize("error", [MissingCredentialsError(), AuthenticationError("401", status_code=401)])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_errors_every_node_would_hit_stop_at_once(
    tmp_path: Path, error: Exception, asynchronous: bool
) -> None:
    backend = FakeBackend("x", error=error)
    describer = ImageDescriber(backend=backend, num_workers=2, on_error="skip")
    nodes = twenty_images(tmp_path)
    with pytest.raises(type(error)):
        await describer.acall(nodes) if asynchronous else describer(nodes)
    assert len(backend.history) < 20


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_concurrency_is_bounded_by_num_workers(tmp_path: Path, asynchronous: bool) -> None:
    counter = InFlightCounter(FakeBackend(describe_colour, latency=0.02))
    describer = ImageDescriber(backend=counter, num_workers=3)  # type: ignore[arg-type]
    nodes = twenty_images(tmp_path)[:12]
    out: Any = await describer.acall(nodes) if asynchronous else describer(nodes)
    assert counter.peak == 3
    assert [n.get_content().split()[-1] for n in out] == [f"{name}." for name in list(PALETTE)[:12]]


def test_show_progress_draws_a_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ImageDescriber(backend=FakeBackend(describe_colour), show_progress=True)(twenty_images(tmp_path)[:3])
    assert "Describing images" in capsys.readouterr().err


def test_url_images_are_sent_as_urls() -> None:
    backend = FakeBackend(describe_colour)
    node = TextNode(text="", metadata={"image_url": "https://192.0.2.1/x.png"})
    [out] = ImageDescriber(backend=backend)([node])
    assert backend.history[0].image.url == "https://192.0.2.1/x.png"  # type: ignore[union-attr]
    assert out.get_content() == "An image at https://192.0.2.1/x.png."

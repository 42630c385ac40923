"""MultiModalVectorStoreIndex's query engine with LlavaLLM: it retrieves two images by default,
and LlavaLLM tiles them into one grid instead of failing."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from llama_index.core import Document
from llama_index.core.embeddings import MockEmbedding, MultiModalEmbedding
from llama_index.core.indices import MultiModalVectorStoreIndex
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import ImageDocument, ImageType

from llava_bridge import FakeBackend, VisionRequest
from llava_bridge.llama_index import LlavaLLM

from .conftest import PALETTE, colour_png

DIMENSIONS = 8


def _vector(payload: bytes) -> list[float]:
    """A deterministic unit-free vector from a hash: no model, no download."""
    digest = hashlib.sha256(payload).digest()
    return [byte / 255.0 + 0.01 for byte in digest[:DIMENSIONS]]


class HashImageEmbedding(MultiModalEmbedding):
    """Image and text vectors from a hash of the bytes or the text, for tests."""

    def _get_image_embedding(self, img_file_path: ImageType) -> list[float]:
        if isinstance(img_file_path, io.BytesIO):
            return _vector(img_file_path.getvalue())
        return _vector(Path(str(img_file_path)).read_bytes())

    async def _aget_image_embedding(self, img_file_path: ImageType) -> list[float]:
        return self._get_image_embedding(img_file_path)

    def _get_text_embedding(self, text: str) -> list[float]:
        return _vector(text.encode())

    def _get_query_embedding(self, query: str) -> list[float]:
        return _vector(query.encode())

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


def colours_seen(request: VisionRequest) -> str:
    """A fake model that names every palette colour covering at least 5% of the image it got."""
    assert request.image is not None and request.image.size is not None
    picture = request.image.to_pil()
    counts = picture.getcolors(maxcolors=1 << 20) or []
    total = picture.width * picture.height
    named = set()
    for count, rgb in counts:
        name = min(PALETTE, key=lambda n: sum((a - b) ** 2 for a, b in zip(PALETTE[n], rgb, strict=True)))
        if sum((a - b) ** 2 for a, b in zip(PALETTE[name], rgb, strict=True)) < 300 and count > total * 0.05:
            named.add(name)
    width, height = request.image.size
    return f"{width}x{height}: " + ", ".join(sorted(named))


def index_of_photos(folder: Path) -> MultiModalVectorStoreIndex:
    documents: list[Any] = [Document(text="A travel diary with three photos.")]
    for name in ("red", "blue", "lime"):
        path = folder / f"{name}.png"
        path.write_bytes(colour_png(name, size=(120, 120)))
        documents.append(ImageDocument(image_path=str(path), metadata={"file_path": str(path)}))
    return MultiModalVectorStoreIndex.from_documents(
        documents, embed_model=MockEmbedding(embed_dim=DIMENSIONS), image_embed_model=HashImageEmbedding()
    )


def test_query_engine_sends_the_two_retrieved_images_as_one_grid(tmp_path: Path) -> None:
    backend = FakeBackend(colours_seen)
    engine = index_of_photos(tmp_path).as_query_engine(llm=LlavaLLM(backend=backend))
    response = engine.query("Which colours are in my photos?")
    image_nodes = response.metadata["image_nodes"]  # type: ignore[index]
    assert len(image_nodes) == 2  # LlamaIndex's default image_similarity_top_k
    retrieved = sorted(Path(n.node.image_path).stem for n in image_nodes)
    [request] = backend.history
    size, colours = str(response).split(": ")
    assert colours.split(", ") == retrieved  # both images, side by side in one picture
    width, height = (int(v) for v in size.split("x"))
    assert width == 2 * height
    assert "Which colours are in my photos?" in request.prompt


async def test_async_query_engine_too(tmp_path: Path) -> None:
    backend = FakeBackend(colours_seen)
    engine = index_of_photos(tmp_path).as_query_engine(llm=LlavaLLM(backend=backend))
    response = await engine.aquery("Which colours?")
    assert len(response.metadata["image_nodes"]) == 2  # type: ignore[index]
    assert len(str(response).split(": ")[1].split(", ")) == 2


def test_the_newer_multimodal_retriever_query_engine_works_too(tmp_path: Path) -> None:
    """LlamaIndex's successor of the multimodal query engine: RetrieverQueryEngine(multimodal=True)."""
    backend = FakeBackend(colours_seen)
    index = index_of_photos(tmp_path)
    engine = RetrieverQueryEngine.from_args(
        retriever=index.as_retriever(), llm=LlavaLLM(backend=backend), multimodal=True
    )
    response = engine.query("Which colours?")
    assert backend.history, "LlavaLLM was asked"
    for request in backend.history:  # one call per context chunk (compact-and-refine)
        assert request.image is not None
    assert set(str(response).split(": ")[1].split(", ")) <= {"red", "blue", "lime"}

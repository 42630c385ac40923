"""What describing one node can come to, and the errors `ImageDescriber` raises."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.schema import BaseNode

from llava_bridge.errors import AuthenticationError, ConfigurationError, LlavaError, PermissionDeniedError

__all__ = [
    "Described",
    "ImageDescriptionError",
    "NodeFailure",
    "Outcome",
    "UnidentifiedImageError",
    "aoutcome_of",
    "mark_failed",
    "outcome_of",
]

_FATAL = (ConfigurationError, AuthenticationError, PermissionDeniedError)
"""Errors every node would hit alike: raised at once instead of collected."""


@dataclass(frozen=True)
class NodeFailure:
    """One node whose image could not be described."""

    node_id: str
    error: LlavaError

    def __str__(self) -> str:
        return f"node {self.node_id}: {type(self.error).__name__}: {self.error}"


class ImageDescriptionError(LlavaError):
    """Some images could not be described; `failures` lists each node and its error."""

    def __init__(self, failures: Sequence[NodeFailure], total: int) -> None:
        shown = "\n".join(f"- {failure}" for failure in failures[:5])
        more = f"\n- ... and {len(failures) - 5} more" if len(failures) > 5 else ""
        super().__init__(
            f"{len(failures)} of {total} images could not be described:\n{shown}{more}\n"
            "Fix those images, or set on_error='skip' (drop those nodes) or 'keep' (keep them "
            "undescribed, with the error in metadata)."
        )
        self.failures = tuple(failures)


class UnidentifiedImageError(ConfigurationError):
    """Image nodes whose text and metadata do not name their image (see `identify_images`)."""

    def __init__(self, node_ids: Sequence[str]) -> None:
        shown = ", ".join(node_ids[:3]) + (f" and {len(node_ids) - 3} more" if len(node_ids) > 3 else "")
        super().__init__(
            f"{len(node_ids)} image node(s) ({shown}) hold an image that neither their text nor their "
            "metadata names, so an IngestionCache (which keys on text and metadata) could give them "
            "another image's description. Run llava_bridge.llama_index.identify_images(nodes) first "
            "(it writes metadata['image_sha256']), or put a file_path, file_name or image_id in "
            "each node's metadata."
        )
        self.node_ids = tuple(node_ids)


@dataclass(frozen=True)
class Described:
    """One node's description and the sha256 of the image described."""

    text: str
    image_sha256: str


Outcome = Described | NodeFailure


def outcome_of(describe: Callable[[BaseNode], Described], node: BaseNode) -> Outcome:
    try:
        return describe(node)
    except _FATAL:
        raise
    except LlavaError as error:
        return NodeFailure(node.node_id, error)


async def aoutcome_of(describe: Callable[[BaseNode], Any], node: BaseNode) -> Outcome:
    try:
        described: Described = await describe(node)
        return described
    except _FATAL:
        raise
    except LlavaError as error:
        return NodeFailure(node.node_id, error)


def mark_failed(node: BaseNode, key: str, failure: NodeFailure) -> None:
    node.metadata[key] = f"{type(failure.error).__name__}: {failure.error}"
    for excluded in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
        if key not in excluded:
            excluded.append(key)

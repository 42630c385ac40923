"""Describe image collections on Ray Data (the `[ray]` extra).

    import ray
    from llava_bridge.ray import BackendSpec, describe_dataset

    ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
    described = describe_dataset(ds, BackendSpec("fal"))
    described.drop_columns(["bytes"]).write_parquet("s3://bucket/captions/")

`LlavaDescriber` is the callable class behind it, for your own `map_batches` calls.
"""

from __future__ import annotations

from llava_bridge._extras import require_extra

require_extra("ray", "ray", "ray.data", "pyarrow", what="llava_bridge.ray")

from llava_bridge.ray.cancel import CANCELLED, NOT_STARTED, CancelSignal  # noqa: E402
from llava_bridge.ray.cluster import local_cluster  # noqa: E402
from llava_bridge.ray.describer import OUTPUT_COLUMNS, LlavaDescriber, describe_dataset  # noqa: E402
from llava_bridge.ray.spec import BackendFactory, BackendSpec  # noqa: E402

__all__ = [
    "CANCELLED",
    "NOT_STARTED",
    "OUTPUT_COLUMNS",
    "BackendFactory",
    "BackendSpec",
    "CancelSignal",
    "LlavaDescriber",
    "describe_dataset",
    "local_cluster",
]

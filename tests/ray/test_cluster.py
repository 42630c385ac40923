"""The local cluster stays on loopback."""

from __future__ import annotations

import os

import ray


def test_every_node_of_the_local_cluster_is_on_loopback(ray_cluster: str) -> None:
    assert ray_cluster.startswith("127.0.0.1:")
    nodes = ray.nodes()
    assert nodes and {node["NodeManagerAddress"] for node in nodes} == {"127.0.0.1"}


def test_the_cluster_ran_with_usage_stats_off_and_a_private_home(ray_cluster: str) -> None:
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert os.path.getsize(os.path.join(os.environ["HOME"], "ray_bootstrap_config.yaml")) == 0
    assert os.environ["RAY_TMPDIR"].startswith("/tmp/lbray-")

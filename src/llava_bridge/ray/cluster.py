"""`local_cluster`: a one-machine Ray cluster that stays on 127.0.0.1, for the CLI, tests and benchmarks.

Ray's processes inherit the environment of the process that starts them, so it is set
while the cluster runs and put back afterwards: usage stats off, a private short
temporary folder (Ray's socket paths must stay short), and a `HOME` holding an empty
``ray_bootstrap_config.yaml`` (without it Ray looks for cloud metadata addresses). The
model cache keeps pointing at the real home (`HF_HOME`).

Ray decides at import whether "127.0.0.1" means loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)
or this machine's outward address; as this process may have imported Ray already, that
flag is also set on Ray's constants module while the cluster runs, so every Ray process
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["local_cluster", "safe_ray_env"]


def safe_ray_env(temp_root: str) -> dict[str, str]:
    """The variables a local cluster runs with, its files under `temp_root`."""
    home = Path(temp_root, "home")
    home.mkdir(parents=True, exist_ok=True)
    (home / "ray_bootstrap_config.yaml").write_text("", encoding="utf-8")
    ray_tmp = Path(temp_root, "r")
    ray_tmp.mkdir(exist_ok=True)
    return {
        "HF_HOME": os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface"),
        "HOME": str(home),
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }


@contextlib.contextmanager
def local_cluster(num_cpus: int | None = None, num_gpus: int | None = None) -> Iterator[None]:
    """Start Ray on this machine only (127.0.0.1, no dashboard); shut it down on exit."""
    from ray._private import ray_constants

    import ray

    temp_root = tempfile.mkdtemp(prefix="lbray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    env = safe_ray_env(temp_root)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # "127.0.0.1" stays loopback (see the module's docstring)
    try:
        ray.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=env["RAY_TMPDIR"],
            log_to_driver=True,
        )
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(temp_root, ignore_errors=True)

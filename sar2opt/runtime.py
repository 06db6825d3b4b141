"""How jobs join Ray: the cluster in RAY_ADDRESS (under `ray job submit`), else a local one."""

from __future__ import annotations

import os


def init_ray() -> bool:
    """Join RAY_ADDRESS's cluster if set, else start a local one; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(include_dashboard=False)
    return True

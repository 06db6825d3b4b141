"""How jobs join Ray: the cluster in RAY_ADDRESS (under `ray job submit`), else a local one.

Without RAY_ADDRESS a job never joins a cluster that happens to run on the machine (another
user's ``ray start``, or a test's): ``ray.init()`` alone would attach to it silently.
"""

from __future__ import annotations

import os
import sys


def init_ray(**kwargs) -> bool:
    """Join RAY_ADDRESS's cluster if set, else start a private local one (``ray.init`` keyword
    arguments ``kwargs``; no dashboard unless asked); True if we started it.

    Says on stderr which cluster the job uses and why, so a log shows where the work ran.
    """
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        print(f"ray: joining the cluster at {address} (RAY_ADDRESS)", file=sys.stderr)
        ray.init()  # the cluster's own settings: ``kwargs`` are for a local one
    else:
        print("ray: starting a private local cluster (RAY_ADDRESS is not set)", file=sys.stderr)
        kwargs.setdefault("include_dashboard", False)  # the jobs that need its State API say so
        ray.init(address="local", **kwargs)
    return True

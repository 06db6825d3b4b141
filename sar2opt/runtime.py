"""How jobs join Ray: the cluster in RAY_ADDRESS (under `ray job submit`), else a local one.

Without RAY_ADDRESS a job never joins a cluster that happens to run on the machine (another
user's ``ray start``, or a test's): ``ray.init()`` alone would attach to it silently.

A local cluster can ``preload`` modules in every worker as the worker starts (Ray's
``worker_process_setup_hook``): Ray starts idle workers as soon as it is up, so while the
driver still searches the catalog and creates its stores they import what the job's actors
need (torch, Ray Data: seconds), and the actor that takes one starts warm.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

#: The modules ``preload_modules`` imports, comma separated (set in the workers' environment).
PRELOAD_ENV = "SAR2OPT_PRELOAD"


def preload_modules() -> None:
    """Ray worker setup hook: import the modules named in $SAR2OPT_PRELOAD (one that is not
    installed is skipped: the worker imports what it needs when it needs it)."""
    for name in filter(None, os.environ.get(PRELOAD_ENV, "").split(",")):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def init_ray(preload: Sequence[str] = (), **kwargs) -> bool:
    """Join RAY_ADDRESS's cluster if set, else start a private local one (``ray.init`` keyword
    arguments ``kwargs``; no dashboard unless asked); True if we started it. A local one's
    workers import the modules ``preload`` as they start (module docstring).

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
        if preload:
            env = dict(kwargs.pop("runtime_env", None) or {})
            env.setdefault("worker_process_setup_hook", f"{__name__}.preload_modules")
            env["env_vars"] = {**(env.get("env_vars") or {}), PRELOAD_ENV: ",".join(preload)}
            kwargs["runtime_env"] = env
        ray.init(address="local", **kwargs)
    return True

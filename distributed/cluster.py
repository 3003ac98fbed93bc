"""Connecting a job's driver to Ray: a running cluster, or a local one started in-process."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, dashboard: bool = False) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``); without either, start Ray in-process.

    The local instance gets one logical CPU more than the machine has cores: Ray
    Data's actor pool takes one CPU per renderer, and the read and write tasks
    need a slot of their own or the pipeline starves on small machines.
    ``dashboard``: start the local instance's dashboard too. Tune needs it: stopping a
    trial's Train run frees its placement group through the State API, which the
    dashboard serves; without it the next trial waits for CPUs that never come back.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, log_to_driver=True)
        log.info("connected to Ray at %s", address or os.environ["RAY_ADDRESS"])
    else:
        cores = os.cpu_count() or 1
        ray.init(num_cpus=cores + 1, include_dashboard=dashboard)
        log.info("started a local Ray with %d logical CPUs on %d cores", cores + 1, cores)


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1))


"""How many cores torch computes on in a process that runs model work itself (not in Ray workers).

Ray starts every process it launches without a CPU reservation, a job's entrypoint included, with
OMP_NUM_THREADS=1, and torch reads it: the evaluation stage, which encodes in the job's driver process,
ran on one core of the node (measured: `torch.get_num_threads()` is 1 inside `ray job submit`). Ray
workers are different: Ray sets their OMP_NUM_THREADS to the CPUs they reserved, and the training loop,
the serving replicas and the Ray Data encoders set their own counts. A driver that computes therefore
asks for its threads explicitly: the configured count, else every core this process may run on.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; a container's cpuset counts, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def use_driver_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads for model work in this process; return the count."""
    import torch

    threads = requested or available_cores()
    if torch.get_num_threads() != threads:
        log.info("torch threads: %d -> %d (%s)", torch.get_num_threads(), threads,
                 "configured" if requested else "the cores this process may use")
        torch.set_num_threads(threads)
    return threads

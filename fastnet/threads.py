"""How many BLAS threads a run uses.

The products of a training step are skinny (100 x 3072 x 50): two BLAS threads make them ~1.7x
faster on an idle 2-core machine, but when another process holds one of the cores, OpenBLAS's
threads wait on each other and an epoch becomes 5-15x *slower* (measured on this 2-core
machine, scripts/bench_peers.py). So by default a run takes the cores that are idle when it
starts -- the core count minus the 1-minute load average, rounded, at least 1 -- and
``--threads N`` says exactly.
"""
from __future__ import annotations

import os


def idle_cores() -> int:
    """Cores not busy at the moment, by the 1-minute load average (all of them if unknown)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        return cores
    return max(1, min(cores, cores - round(load)))


def blas_threads(threads: int | None):
    """A context in which BLAS uses ``threads`` threads (None: :func:`idle_cores`)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(threads or idle_cores(), user_api="blas")

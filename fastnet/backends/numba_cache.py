"""What Numba's on-disk cache holds for this machine: whether a run would start at once or
compile first (``fastnet info``, and the sweeps that compile once before their workers start).

Numba keys a cached function by its signature, the CPU it was compiled for (name and
features) and its bytecode, so an edited kernel is compiled again. A kernel
counts as ready when its index holds at least one entry for this CPU; which signature a run
needs (dtype, network depth for the Numba step) is not checked, so "ready" can still mean one
more compilation for a new depth or dtype.
"""
from __future__ import annotations

from collections.abc import Iterable


def cached_for_this_cpu(dispatcher) -> bool | None:
    """True if Numba's cache holds ``dispatcher`` compiled for this CPU, False if not, None
    if it cannot tell (no cache, or a Numba whose cache is laid out otherwise)."""
    try:
        from numba.core.registry import cpu_target

        codegen = cpu_target.target_context.codegen()
        cache = dispatcher._cache
        index = cache._cache_file._load_index()
        # an entry counts if Numba would load it: this CPU and this bytecode (key = (sig, cpu, code))
        return any(key == cache._index_key(key[0], codegen) for key in index)
    except Exception:  # uncached dispatcher, or Numba's internals differ: unknown
        return None


def readiness(dispatchers: Iterable) -> tuple[int, int]:
    """(kernels cached for this CPU, kernels) among ``dispatchers``."""
    states = [cached_for_this_cpu(d) for d in dispatchers]
    return sum(1 for s in states if s), len(states)

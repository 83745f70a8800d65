"""What the CPU is: its model name, its family and model numbers, its instruction-set flags.

Read from ``/proc/cpuinfo`` (Linux), which is also what ``lscpu`` prints; elsewhere the model
name falls back to :mod:`platform` and the flags to none, so everything that depends on a flag
falls back to the path that needs none. A virtual machine's model name can be as short as
"AMD EPYC" for several generations, so what must tell CPUs apart (a cached measurement) uses
:func:`cpu_id`, which adds the family and model numbers.
"""
from __future__ import annotations

import functools
import platform


@functools.lru_cache(maxsize=1)
def _fields() -> dict[str, str]:
    """The first processor's ``name: value`` lines of /proc/cpuinfo (empty if unreadable)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # the end of the first processor's block
                name, _, value = line.partition(":")
                fields.setdefault(name.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s "Model name"), or the machine's architecture."""
    return _fields().get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_id() -> str:
    """The model name with the family and model numbers, e.g. "AMD EPYC (family 26, model 2)"."""
    f = _fields()
    if "cpu family" in f and "model" in f:
        return f"{cpu_model()} (family {f['cpu family']}, model {f['model']})"
    return cpu_model()


def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags as the kernel names them (``avx512f``, ``avx512_bf16``,
    ``amx_tile``, ...); empty where they cannot be read."""
    return frozenset(_fields().get("flags", "").split())


#: The AVX-512 subsets OpenBLAS's SkylakeX kernels use.
AVX512_SGEMM = frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"})


def has_avx512() -> bool:
    """Whether the CPU has the AVX-512 subsets of :data:`AVX512_SGEMM`."""
    return AVX512_SGEMM <= cpu_flags()

"""Matrix-multiply providers: a library's CBLAS ``?gemm`` pair, found in the loaded libraries and
handed out by address, for compiled code to call (the Numba kernel :func:`fastnet.backends.blas.gemm`,
the extension's fused step).

Compiled code calls the BLAS that NumPy uses (the one the benchmarks' matrix-multiply floor and
every other product of fastnet run on, under one thread setting). ``np.dot`` inside Numba would
go to SciPy's separate copy of OpenBLAS, with its own thread pool, and offers no ``beta`` -- and
beta is what lets a weight update be part of the weight-gradient product.

A provider is a function of no arguments returning a :data:`GemmTable` (or None when its
library is not there); :data:`PROVIDERS` lists them in order of preference and
:func:`find_gemm` returns the first one found. Every provider hands out functions with the
CBLAS signature, so their callers call any of them alike. Nothing here imports Numba.
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

#: int64 [address of cblas_sgemm, address of cblas_dgemm, 1 if their integers are 64-bit].
GemmTable = NDArray

#: NumPy's OpenBLAS names its CBLAS symbols after its integer width (and a prefix of its own
#: in SciPy's build); the first pair found wins: (sgemm, dgemm, 64-bit integers).
_NUMPY_SYMBOLS = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", 1), ("cblas_sgemm64_", "cblas_dgemm64_", 1),
                  ("cblas_sgemm", "cblas_dgemm", 0))


def numpy_cblas() -> GemmTable | None:
    """The provider of NumPy's own BLAS: its CBLAS ?gemm pair, or None."""
    try:
        from threadpoolctl import threadpool_info

        libs = [i["filepath"] for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception:  # threadpoolctl missing or failing: no compiled products, nothing worse
        return None
    libs.sort(key=lambda path: "numpy" not in path)  # NumPy's own first
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for s_name, d_name, ilp64 in _NUMPY_SYMBOLS:
            s_fn, d_fn = getattr(lib, s_name, None), getattr(lib, d_name, None)
            if s_fn is not None and d_fn is not None:
                addr = [ctypes.cast(f, ctypes.c_void_p).value for f in (s_fn, d_fn)]
                return np.array(addr + [ilp64], dtype=np.int64)
    return None


#: The providers, in order of preference.
PROVIDERS: tuple[Callable[[], GemmTable | None], ...] = (numpy_cblas,)


def find_gemm() -> GemmTable | None:
    """The table of the first of :data:`PROVIDERS` that finds its library, or None."""
    for provider in PROVIDERS:
        table = provider()
        if table is not None:
            return table
    return None

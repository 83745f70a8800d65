"""Matrix-multiply providers: a library's CBLAS ``?gemm`` pair, found in the loaded libraries and
handed out by address, for compiled code to call (the Numba kernel :func:`fastnet.backends.blas.gemm`,
the extension's fused step).

Compiled code calls the BLAS that NumPy uses (the one the benchmarks' matrix-multiply floor and
every other product of fastnet run on, under one thread setting). ``np.dot`` inside Numba would
go to SciPy's separate copy of OpenBLAS, with its own thread pool, and offers no ``beta`` -- and
beta is what lets a weight update be part of the weight-gradient product.

A provider is a function of no arguments returning a :data:`GemmTable` (or None when its
library is not there); :data:`PROVIDERS` lists them in order of preference and
:func:`find_gemm` returns the first one found; :data:`NAMED` names them (``--gemm``, chosen
per run by :mod:`fastnet.backends.gemm_choice`). Every provider hands out functions with the
CBLAS signature, so their callers call any of them alike. Nothing here imports Numba.

Two providers:

* ``openblas`` (:func:`numpy_cblas`): NumPy's own OpenBLAS, always there; the default.
* ``mkl`` (:func:`mkl_cblas`): Intel MKL's single dynamic library ``libmkl_rt`` from the
  ``mkl`` wheel (``pip install 'fastnet[mkl]'``), when it is installed. NumPy never loads it,
  so it is loaded here, and set up before its first product (:func:`_setup_mkl`): LP64,
  sequential (each product on its caller's thread), reproducible rounding.
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


# ----------------------------------------------------------------------------- MKL

#: The file names of MKL's single dynamic library, newest first (the 2026 wheels ship
#: ``libmkl_rt.so.3``, older ones ``.so.2``; ``.so`` is the development link).
MKL_NAMES = ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so")
#: mkl_service.h: MKL_INTERFACE_LP64 (32-bit integers, as the table's flag 0 says) and the
#: threading layers.
_MKL_INTERFACE_LP64, _MKL_THREADING_SEQUENTIAL = 0, 1
#: mkl_service.h: conditional numerical reproducibility, MKL_CBWR_AUTO (the same bits on this
#: CPU for the same thread count, whatever the alignment of the arrays).
_MKL_CBWR_AUTO = 2

_mkl: ctypes.CDLL | None = None
_mkl_path: str | None = None


def mkl_library_path() -> str | None:
    """The path of MKL's ``libmkl_rt`` if one can be found: beside this Python (``sys.prefix/lib``,
    where the ``mkl`` wheel puts it), then the loader's search (``ctypes.util.find_library``);
    None if neither has it."""
    import ctypes.util
    import os
    import sys

    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        for name in MKL_NAMES:
            path = os.path.join(prefix, "lib", name)
            if os.path.isfile(path):
                return path
    return ctypes.util.find_library("mkl_rt")


def _setup_mkl(lib: ctypes.CDLL) -> None:
    """Settings that must precede MKL's first product (each is ignored once MKL has run one):

    * the LP64 interface, whose 32-bit integers the table declares (flag 0);
    * the sequential threading layer: every MKL product runs on the thread that calls it, so
      its bits never depend on threads MKL would start. The fused step makes its own two-core
      split (one BLAS thread per core), so it loses nothing. The GNU OpenMP layer was tried
      first: threadpoolctl could set its count, but a limit set before MKL was loaded never
      reached it (MKL then ran on both cores, 5x slower on this shared machine), and called
      from Numba's TBB worker threads (Numba's layer once the ``mkl`` wheel brings ``tbb``)
      MKL ignored the limit and two-core runs differed in their last bits (4 of 19 repeats of
      tests/training/test_fused.py's two-run test). The price: a run on two BLAS threads that
      steps on one core (``--augment``) gets one MKL thread where OpenBLAS would use two; on
      this shared 2-core machine MKL's two OpenMP threads were the slower anyway (the [50, 50]
      floor 60 s against OpenBLAS's 7 s with another process on a core);
    * conditional numerical reproducibility (MKL_CBWR_AUTO): without it MKL may round
      differently for arrays at other alignments, so two runs could differ in their last bits.
    """
    lib.MKL_Set_Interface_Layer(_MKL_INTERFACE_LP64)
    lib.MKL_Set_Threading_Layer(_MKL_THREADING_SEQUENTIAL)
    lib.MKL_CBWR_Set(_MKL_CBWR_AUTO)


def _load_mkl() -> ctypes.CDLL | None:
    """MKL's ``libmkl_rt``, loaded and set up once per process; None if it is not installed
    or does not load."""
    global _mkl, _mkl_path
    if _mkl is None:
        path = mkl_library_path()
        if path is None:
            return None
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            return None
        _setup_mkl(lib)
        _mkl, _mkl_path = lib, path
    return _mkl


def mkl_cblas() -> GemmTable | None:
    """The provider of Intel MKL (LP64): its CBLAS ?gemm pair, or None when MKL is not installed."""
    lib = _load_mkl()
    if lib is None:
        return None
    s_fn, d_fn = getattr(lib, "cblas_sgemm", None), getattr(lib, "cblas_dgemm", None)
    if s_fn is None or d_fn is None:
        return None
    addr = [ctypes.cast(f, ctypes.c_void_p).value for f in (s_fn, d_fn)]
    return np.array(addr + [0], dtype=np.int64)


def mkl_version() -> str | None:
    """MKL's version sentence (``MKL_Get_Version_String``), or None without MKL."""
    lib = _load_mkl()
    if lib is None:
        return None
    buf = ctypes.create_string_buffer(256)
    lib.MKL_Get_Version_String(buf, len(buf))
    return buf.value.decode(errors="replace").strip()


def library_path(name: str) -> str | None:
    """The file a named provider's functions come from (``fastnet info``), or None."""
    if name == "mkl":
        return _mkl_path if _load_mkl() is not None else None
    try:
        from threadpoolctl import threadpool_info

        paths = [i["filepath"] for i in threadpool_info() if i.get("user_api") == "blas" and i.get("internal_api") == "openblas"]
    except Exception:
        return None
    paths.sort(key=lambda path: "numpy" not in path)
    return paths[0] if paths else None


#: The providers, in order of preference: the first found is every compiled product's
#: default (:func:`find_gemm`); MKL is only used when a run asks for it (``--gemm``).
PROVIDERS: tuple[Callable[[], GemmTable | None], ...] = (numpy_cblas, mkl_cblas)

#: The providers by the name ``--gemm`` gives them.
NAMED: dict[str, Callable[[], GemmTable | None]] = {"openblas": numpy_cblas, "mkl": mkl_cblas}


def find_gemm() -> GemmTable | None:
    """The table of the first of :data:`PROVIDERS` that finds its library, or None."""
    for provider in PROVIDERS:
        table = provider()
        if table is not None:
            return table
    return None

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

Three providers:

* ``openblas`` (:func:`numpy_cblas`): NumPy's own OpenBLAS, always there; the default.
* ``openblas-avx512`` (:func:`openblas_avx512_cblas`): a second OpenBLAS, the
  ``scipy-openblas32`` wheel (a dependency on x86-64), loaded here with its AVX-512 (SkylakeX)
  kernels asked for by name, whatever NumPy's copy runs. OpenBLAS takes its kernels from
  ``OPENBLAS_CORETYPE`` when set, else from the CPU's family and model, once, as it loads: by
  the time fastnet is imported NumPy's copy has chosen, and it can have chosen older ones --
  the environment of the machines fastnet is measured on sets ``OPENBLAS_CORETYPE=Haswell``,
  so NumPy's OpenBLAS runs its AVX2 kernels on their AVX-512 CPUs, at 1.4-1.8x the time of its
  AVX-512 ones for the step's products (AMD Zen 5; README), and a CPU newer than an OpenBLAS
  build can get an older core's kernels too. Its thread count follows NumPy's (threadpoolctl
  sees both libraries, so a thread limit sets both).
* ``mkl`` (:func:`mkl_cblas`): Intel MKL's single dynamic library ``libmkl_rt`` from the
  ``mkl`` wheel (``pip install 'fastnet[mkl]'``), when it is installed. NumPy never loads it,
  so it is loaded here, and set up before its first product (:func:`_setup_mkl`): LP64,
  sequential (each product on its caller's thread), reproducible rounding. It also has a bf16
  product, ``cblas_gemm_bf16bf16f32`` (:func:`mkl_bf16_gemm`): bf16 inputs, float32 sums and
  output, on AMX tiles or AVX512_BF16 where the CPU has them and emulated elsewhere -- the
  first layer's products of ``--precision bf16`` with ``--gemm mkl``, and on CPUs without
  AVX512_BF16, where fastnet's own bf16 kernels cannot run.
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


def _pair(lib: ctypes.CDLL, s_name: str, d_name: str, ilp64: int) -> GemmTable | None:
    """The table of ``lib``'s CBLAS ?gemm pair under these names, or None if it lacks one."""
    fns = [getattr(lib, name, None) for name in (s_name, d_name)]
    if None in fns:
        return None
    return np.array([ctypes.cast(f, ctypes.c_void_p).value for f in fns] + [ilp64], dtype=np.int64)


def _numpy_blas_pools() -> list[dict]:
    """threadpoolctl's BLAS pools, NumPy's own first, fastnet's AVX-512 copy left out (empty if
    threadpoolctl is missing or fails)."""
    try:
        from threadpoolctl import threadpool_info

        pools = [i for i in threadpool_info() if i.get("user_api") == "blas" and i.get("filepath") != _avx512_path]
    except Exception:  # threadpoolctl missing or failing: no compiled products, nothing worse
        return []
    return sorted(pools, key=lambda i: "numpy" not in (i.get("filepath") or ""))


def numpy_cblas() -> GemmTable | None:
    """The provider of NumPy's own BLAS: its CBLAS ?gemm pair, or None."""
    for pool in _numpy_blas_pools():
        try:
            lib = ctypes.CDLL(pool["filepath"])
        except OSError:
            continue
        for names in _NUMPY_SYMBOLS:
            if (tab := _pair(lib, *names)) is not None:
                return tab
    return None


def _numpy_openblas() -> dict | None:
    """threadpoolctl's entry for NumPy's OpenBLAS, or None if NumPy's BLAS is not OpenBLAS."""
    return next((i for i in _numpy_blas_pools() if i.get("internal_api") == "openblas"), None)


def numpy_openblas_core() -> str | None:
    """The kernels NumPy's OpenBLAS chose for this CPU ("Haswell", "SkylakeX", ...), or None if
    NumPy's BLAS is not OpenBLAS or cannot be asked."""
    pool = _numpy_openblas()
    return pool.get("architecture") if pool else None


# ----------------------------------------------------------------- OpenBLAS, AVX-512 asked for

#: The OpenBLAS core asked for, and the cores whose single-precision kernels are its (OpenBLAS
#: names Cooper Lake's and Sapphire Rapids' builds after their own, over SkylakeX's sgemm).
AVX512_CORE = "SkylakeX"
AVX512_CORES = frozenset({"skylakex", "cooperlake", "sapphirerapids"})
#: The wheel's module, and its library's symbol prefix (32-bit integers, as the table's flag 0 says).
_WHEEL, _PREFIX = "scipy_openblas32", "scipy_"

_avx512: ctypes.CDLL | None = None
_avx512_path: str | None = None
#: Why the last :func:`openblas_avx512_cblas` found none (``--gemm openblas-avx512``'s error).
avx512_missing = ""


def _wheel_library() -> str | None:
    """The path of the ``scipy-openblas32`` wheel's library, found without importing the wheel
    (importing it loads the library, before a core could be asked for)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec(_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        return None
    lib_dir = os.path.join(next(iter(spec.submodule_search_locations)), "lib")
    names = sorted(n for n in os.listdir(lib_dir) if n.startswith("libscipy_openblas")) if os.path.isdir(lib_dir) else []
    return os.path.join(lib_dir, names[0]) if names else None


def _load_avx512() -> ctypes.CDLL | None:
    """The wheel's OpenBLAS on its AVX-512 kernels, loaded once per process; None (and the
    reason in :data:`avx512_missing`) on a CPU without AVX-512, without the wheel, or when the
    library was loaded before (by an import of the wheel) on other kernels."""
    global _avx512, _avx512_path, avx512_missing
    if _avx512 is not None:
        return _avx512
    import os

    from fastnet.util.cpu import cpu_model, has_avx512
    from fastnet.util.threads import blas_thread_count

    if not has_avx512():
        avx512_missing = f"this CPU ({cpu_model()}) has no AVX-512"
        return None
    path = _wheel_library()
    if path is None:
        avx512_missing = "the scipy-openblas32 wheel is not installed (pip install scipy-openblas32)"
        return None
    before = os.environ.get("OPENBLAS_CORETYPE")
    os.environ["OPENBLAS_CORETYPE"] = AVX512_CORE  # read once, as the library loads
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        avx512_missing = f"{path} did not load: {e}"
        return None
    finally:
        if before is None:
            del os.environ["OPENBLAS_CORETYPE"]
        else:
            os.environ["OPENBLAS_CORETYPE"] = before
    corename = getattr(lib, _PREFIX + "openblas_get_corename")
    corename.restype = ctypes.c_char_p
    core = corename().decode(errors="replace")
    if core.lower() not in AVX512_CORES:
        avx512_missing = f"{path} was loaded before on its {core} kernels (import fastnet before {_WHEEL})"
        return None
    getattr(lib, _PREFIX + "openblas_set_num_threads")(blas_thread_count())  # as NumPy's, until a limit sets both
    _avx512, _avx512_path = lib, path
    return lib


def openblas_avx512_cblas() -> GemmTable | None:
    """The provider of OpenBLAS on its AVX-512 kernels: the wheel's CBLAS ?gemm pair, or None."""
    lib = _load_avx512()
    if lib is None:
        return None
    return _pair(lib, _PREFIX + "cblas_sgemm", _PREFIX + "cblas_dgemm", 0)


def avx512_upgrade() -> bool:
    """Whether OpenBLAS on its AVX-512 kernels would run other kernels than NumPy's: the CPU
    has AVX-512 and NumPy's OpenBLAS runs an older core's."""
    from fastnet.util.cpu import has_avx512

    core = numpy_openblas_core()
    return has_avx512() and core is not None and core.lower() not in AVX512_CORES


def coretype_asked() -> str | None:
    """The core ``OPENBLAS_CORETYPE`` asks every OpenBLAS for, if it is set (by the user or the
    machine's environment: a choice of kernels, often made so that results agree across CPUs)."""
    import os

    return os.environ.get("OPENBLAS_CORETYPE") or None


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
    return _pair(lib, "cblas_sgemm", "cblas_dgemm", 0)


def mkl_bf16_gemm() -> int | None:
    """The address of MKL's ``cblas_gemm_bf16bf16f32`` (LP64: ?gemm's arguments, A and B as
    uint16 bf16 matrices, C float32), or None when MKL is not installed or lacks it."""
    lib = _load_mkl()
    fn = getattr(lib, "cblas_gemm_bf16bf16f32", None) if lib is not None else None
    return ctypes.cast(fn, ctypes.c_void_p).value if fn is not None else None


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
    if name == "openblas-avx512":
        return _avx512_path if _load_avx512() is not None else None
    pool = _numpy_openblas()
    return pool["filepath"] if pool else None


#: The providers, in order of preference: the first found is every compiled product's
#: default (:func:`find_gemm`); the others are only used when a run chooses them (``--gemm``).
PROVIDERS: tuple[Callable[[], GemmTable | None], ...] = (numpy_cblas, openblas_avx512_cblas, mkl_cblas)

#: The providers by the name ``--gemm`` gives them.
NAMED: dict[str, Callable[[], GemmTable | None]] = {"openblas": numpy_cblas, "openblas-avx512": openblas_avx512_cblas,
                                                     "mkl": mkl_cblas}


def find_gemm() -> GemmTable | None:
    """The table of the first of :data:`PROVIDERS` that finds its library, or None."""
    for provider in PROVIDERS:
        table = provider()
        if table is not None:
            return table
    return None

"""Matrix products for compiled code: a provider's CBLAS ``?gemm``, found by address, and
:func:`gemm`, the Numba kernel that calls it.

The fused step (:mod:`fastnet.backends.numba_step`), lock-step training and the benchmark
scripts call the BLAS that NumPy uses (the one the benchmarks' matrix-multiply floor and
every other product of fastnet run on, under one thread setting): its CBLAS ``?gemm``, found
in the loaded libraries at import, called by address. ``np.dot`` inside Numba would go to
SciPy's separate copy of OpenBLAS, with its own thread pool, and offers no ``beta`` -- and
beta is what lets a weight update be part of the weight-gradient product.

A provider is a function of no arguments returning a :data:`GemmTable` (or None when its
library is not there); :data:`PROVIDERS` lists them in order of preference and
:data:`BLAS` is the first one found, or None. Every provider hands out functions with the
CBLAS signature, so :func:`gemm` calls any of them alike.

The table is an argument of the compiled functions (never a global), so their Numba cache
stays valid from one process to the next, whatever the addresses are in this one.
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic
from numpy.typing import NDArray

from fastnet.backends.numba_ops import fast_kernel

#: int64 [address of cblas_sgemm, address of cblas_dgemm, 1 if their integers are 64-bit].
GemmTable = NDArray

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112

#: NumPy's OpenBLAS names its CBLAS symbols after its integer width (and a prefix of its own
#: in SciPy's build); the first pair found wins: (sgemm, dgemm, 64-bit integers).
_NUMPY_SYMBOLS = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", 1), ("cblas_sgemm64_", "cblas_dgemm64_", 1),
                  ("cblas_sgemm", "cblas_dgemm", 0))


def numpy_cblas() -> GemmTable | None:
    """The provider of NumPy's own BLAS: its CBLAS ?gemm pair, or None (also under
    NUMBA_DISABLE_JIT, where the call by address cannot run as Python)."""
    from numba.core import config

    if config.DISABLE_JIT:
        return None
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


@intrinsic
def _cblas_gemm(typingctx, fn, ilp64, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """cblas_?gemm(RowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) at address fn;
    a, b, c are data addresses; integers are 64-bit if ilp64 else 32-bit."""
    sig = types.void(fn, ilp64, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        fn, ilp64, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc = args
        i32, ptr = ir.IntType(32), ir.IntType(8).as_pointer()

        def call(it):
            def cast(v):
                return builder.trunc(v, it) if it.width < v.type.width else builder.sext(v, it) if it.width > v.type.width else v

            fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, it, it, it, alpha.type, ptr, it, ptr, it, beta.type, ptr, it])
            builder.call(builder.inttoptr(fn, fnty.as_pointer()), [
                ir.Constant(i32, _ROW_MAJOR), builder.trunc(ta, i32), builder.trunc(tb, i32), cast(m), cast(n), cast(k),
                alpha, builder.inttoptr(a, ptr), cast(lda), builder.inttoptr(b, ptr), cast(ldb),
                beta, builder.inttoptr(c, ptr), cast(ldc)])

        with builder.if_else(builder.icmp_signed("!=", ilp64, ir.Constant(ilp64.type, 0))) as (wide, narrow):
            with wide:
                call(ir.IntType(64))
            with narrow:
                call(i32)
        return context.get_dummy_value()

    return sig, codegen


@fast_kernel(nogil=True)
def gemm(blas, A, trans_a, B, trans_b, C, alpha, beta):
    """C = alpha op(A) op(B) + beta C (op = transpose if trans_*), row-major, by the provider's
    ?gemm of C's dtype (``blas``: a :data:`GemmTable`, e.g. :data:`BLAS`): each array
    C-contiguous or a block of columns of one (rows of unit-stride elements)."""
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    ta = _TRANS if trans_a else _NO_TRANS
    tb = _TRANS if trans_b else _NO_TRANS
    lda, ldb, ldc = A.strides[0] // A.itemsize, B.strides[0] // B.itemsize, C.strides[0] // C.itemsize
    if C.itemsize == 4:
        _cblas_gemm(blas[0], blas[2], ta, tb, m, n, k, np.float32(alpha), A.ctypes.data, lda,
                    B.ctypes.data, ldb, np.float32(beta), C.ctypes.data, ldc)
    else:
        _cblas_gemm(blas[1], blas[2], ta, tb, m, n, k, np.float64(alpha), A.ctypes.data, lda,
                    B.ctypes.data, ldb, np.float64(beta), C.ctypes.data, ldc)


#: The table of the provider found at import, or None (then no compiled step: op by op).
BLAS: GemmTable | None = find_gemm()

"""Matrix products for Numba: :func:`gemm`, the kernel that calls a provider's CBLAS ``?gemm``
by address (:mod:`fastnet.backends.providers` finds them).

The fused step (:mod:`fastnet.backends.numba_step`), lock-step training and the benchmark
scripts call it. The table is an argument of the compiled functions (never a global), so their
Numba cache stays valid from one process to the next, whatever the addresses are in this one.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import config
from numba.extending import intrinsic

from fastnet.backends.numba_ops import fast_kernel
from fastnet.backends.providers import PROVIDERS, GemmTable, find_gemm, numpy_cblas

__all__ = ["BLAS", "PROVIDERS", "GemmTable", "find_gemm", "gemm", "numpy_cblas"]

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


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


#: The table of the provider found at import, or None (then no compiled step: op by op); None
#: under NUMBA_DISABLE_JIT too, where the call by address cannot run as Python.
BLAS: GemmTable | None = None if config.DISABLE_JIT else find_gemm()

"""Backends: one table of ops, three implementations of it, the rule that picks one, and the
compiled whole training step.

* ``ops`` -- :data:`OPS`, the one list of op names (and, derived from it, the ops with
  compiled kernels and their kernels' names);
* ``reference`` -- the specification: NumPy, the assignment's equations, one function per op;
* ``checks`` -- the argument checks every backend applies at the op boundary, so all fail alike;
* ``compiled`` -- :class:`~fastnet.backends.compiled.CompiledOps`, the checked ops of both
  compiled backends (one method per op, documented by the reference) over a table of kernels;
* ``numba_ops`` and ``cython_ops`` -- the compiled backends: their kernels (``@njit`` functions
  in ``numba_ops``; ``kernels/_ckernels.pyx``, built as ``fastnet.ext._ckernels``, for
  ``cython_ops``) and the ops of one ``CompiledOps`` over them;
* ``blas`` -- the matrix-multiply provider of compiled code: NumPy's CBLAS ``?gemm`` by address,
  and the Numba ``gemm`` that calls it;
* ``numba_step`` -- the fused step: a whole SGD step (one core or two) and the batch gathers;
* ``dispatch`` -- the :class:`Backend` record, ``load``/``resolve`` and the fallback notices.

Importing this package imports neither Numba nor the extension.
"""
from __future__ import annotations

from fastnet.backends.dispatch import (
    AUTO_ORDER,
    NAMES,
    Backend,
    FastnetBackendNotice,
    info,
    load,
    notice,
    resolve,
)
from fastnet.backends.ops import OPS

__all__ = ["AUTO_ORDER", "NAMES", "OPS", "Backend", "FastnetBackendNotice", "info", "load", "notice", "resolve"]

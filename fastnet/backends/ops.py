"""The one table of ops: every backend module exports exactly these names, with the
signatures of :mod:`fastnet.backends.reference`.

:data:`OPS` is the list; the rest is derived from it: which ops the compiled backends run
on kernels of their own (:data:`KERNEL_OPS`; the others are the reference's: :data:`BLAS_OPS`,
:data:`REFERENCE_OPS`) and the name of each op's kernel
(:func:`kernel_name`).
"""
from __future__ import annotations

OPS: tuple[str, ...] = (
    "linear_forward",
    "linear_backward",
    "bias_relu_forward",
    "relu_backward",
    "bn_relu_forward_train",
    "bn_relu_forward_eval",
    "bn_relu_backward",
    "softmax_xent",
    "softmax_xent_backward",
    "sgd_update_inplace",
    # bonus (Exercise 4): batch norm after the ReLU, and Adam
    "bn_forward_train",
    "bn_forward_eval",
    "bn_backward",
    "adam_update_inplace",
    # issue 17: cross-entropy against soft targets (label smoothing, MixUp)
    "softmax_xent_soft",
    "softmax_xent_soft_backward",
)

#: The matrix products: every backend re-exports the reference's, which call BLAS through
#: NumPy (a loop written in a backend would only be a slower BLAS).
BLAS_OPS: tuple[str, ...] = ("linear_forward", "linear_backward")

#: Ops every backend takes from the reference as they are: the soft-target cross-entropy is
#: O(n K) elementwise work beside the step's products (K = 10), which a kernel of its own would
#: not make measurably faster; runs that use it take the op-by-op step anyway.
REFERENCE_OPS: tuple[str, ...] = ("softmax_xent_soft", "softmax_xent_soft_backward")

#: The ops the compiled backends (Numba, Cython) run on kernels of their own.
KERNEL_OPS: tuple[str, ...] = tuple(op for op in OPS if op not in BLAS_OPS and op not in REFERENCE_OPS)


def kernel_name(op: str) -> str:
    """The name of the compiled kernel behind ``op``: the op's, less ``_inplace`` (a kernel
    always fills what it is handed)."""
    return op.removesuffix("_inplace")

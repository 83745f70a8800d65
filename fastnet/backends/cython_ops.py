"""The Cython backend: validates and allocates in Python, loops in ``fastnet.ext._ckernels``.

Every op has the name and signature of its twin in ``reference.py``: a method of
:class:`~fastnet.backends.compiled.CompiledOps` (checks as the reference's, outputs allocated)
over the compiled loops of ``kernels/_ckernels.pyx``, ``_ckernels.<kernel_name(op)>``, which
trust what they are given and only fill the outputs.

Importing this module raises ImportError, and nothing else, when the extension is missing or
older than this wrapper; ``fastnet.backends.load`` turns that into the backend's ``reason``.

``linear_forward`` and ``linear_backward`` are matrix products: the reference ops, which call
BLAS through NumPy, are re-exported (a hand loop would be a slower BLAS); so is the
soft-target cross-entropy (``REFERENCE_OPS``: O(n K) work, issue 17).
"""
from __future__ import annotations

import importlib

import numpy as np

from fastnet.backends.compiled import CompiledOps
from fastnet.backends.ops import KERNEL_OPS, OPS, kernel_name
from fastnet.backends.reference import (
    BNGrad,
    BNTrain,
    LinGrad,
    Xent,
    linear_backward,  # noqa: F401 -- the two products are the reference's (BLAS), this backend's ops too
    linear_forward,  # noqa: F401
    softmax_xent_soft,  # noqa: F401 -- REFERENCE_OPS: soft targets (issue 17) are the reference's in every backend
    softmax_xent_soft_backward,  # noqa: F401
)

# ImportError when the extension was not built. import_module asks the import system, so
# ``sys.modules`` decides (a test or a fallback can hide the extension); ``from fastnet.ext
# import _ckernels`` would return whatever module was once set as an attribute of the package.
_ck = importlib.import_module("fastnet.ext._ckernels")

NAME = "cython"
VERSION = getattr(_ck, "VERSION", "unknown")

__all__ = [*OPS, "BNGrad", "BNTrain", "LinGrad", "Xent"]

_REQUIRED_VERSION = "fastnet.ext._ckernels 9"


def _specialisations() -> dict[np.dtype, dict[str, object]]:
    """The float and double instance of every fused kernel, picked once here.

    Calling a fused Cython function makes it inspect its arguments' buffers to choose a
    specialisation on every call (microseconds, as much as a small kernel's work); the
    checks have already fixed the dtype, so each op calls the right instance directly.
    """
    if VERSION != _REQUIRED_VERSION:
        raise ImportError(
            f"fastnet.ext._ckernels is {VERSION!r}, expected {_REQUIRED_VERSION!r}; rebuild it: pip install -e ."
        )
    table: dict[np.dtype, dict[str, object]] = {}
    for dtype, ctype in ((np.dtype(np.float32), "float"), (np.dtype(np.float64), "double")):
        try:
            table[dtype] = {name: getattr(_ck, name)[ctype] for name in map(kernel_name, KERNEL_OPS)}
        except (AttributeError, KeyError, TypeError) as exc:  # a stale or foreign build
            raise ImportError(f"fastnet.ext._ckernels lacks a {ctype} kernel ({exc}); rebuild it: pip install -e .") from exc
    return table


# Checks, output allocation and scalar casts are shared with the Numba backend (compiled.py).
_OPS = CompiledOps(_specialisations())

bias_relu_forward = _OPS.bias_relu_forward
relu_backward = _OPS.relu_backward
bn_relu_forward_train = _OPS.bn_relu_forward_train
bn_relu_forward_eval = _OPS.bn_relu_forward_eval
bn_relu_backward = _OPS.bn_relu_backward
softmax_xent = _OPS.softmax_xent
softmax_xent_backward = _OPS.softmax_xent_backward
sgd_update_inplace = _OPS.sgd_update_inplace
bn_forward_train = _OPS.bn_forward_train
bn_forward_eval = _OPS.bn_forward_eval
bn_backward = _OPS.bn_backward
adam_update_inplace = _OPS.adam_update_inplace

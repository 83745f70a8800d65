"""Backends: one table of ops (:data:`OPS`), three implementations of it, and the rule that
picks one (:mod:`fastnet.backends.dispatch`).

``reference`` is the specification (NumPy, the assignment's equations); ``numba_ops`` and
``cython_ops`` compute the same ops with fused kernels; ``numba_step`` is the compiled whole
training step. Importing this package imports neither Numba nor the extension.
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

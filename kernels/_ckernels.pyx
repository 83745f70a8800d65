# cython: language_level=3
"""Compiled loops for fastnet's Cython backend (fastnet._ckernels).

Loops only: validation and allocation happen in fastnet/backends/cython_ops.py.
"""
from cython cimport floating

VERSION = "fastnet._ckernels 1"


def relu_backward(const floating[:, ::1] G, const floating[:, ::1] X, floating[:, ::1] out):
    """out = G * (X > 0), eqs (24)/(30)."""
    cdef Py_ssize_t i, j
    with nogil:
        for i in range(G.shape[0]):
            for j in range(G.shape[1]):
                out[i, j] = G[i, j] if X[i, j] > 0 else 0

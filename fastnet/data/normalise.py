"""The compiled normalisation of uint8 rows, bit for bit :func:`fastnet.data.images.normalise_into`'s
arithmetic; data owns it, and the fused step's gather calls it too."""
from __future__ import annotations

import numpy as np
from numba import njit

# ------------------------------------------------------------------ images kept as bytes
# The training set is held as uint8 pixels and normalised as rows are read
# (fastnet.data.images.NormalisedImages): a quarter of the memory, and a gather that reads 0.3 MB
# per batch of 100 instead of 1.2 MB. These kernels compute exactly what
# data.normalise_into does -- (float64(u) - mean) * (1 / std), rounded once to the output
# dtype -- and are compiled without fast-math so that no step of it is reassociated: the
# rows are bit for bit those of an eager normalisation (tests/data/test_images.py).

@njit(cache=True, nogil=True)
def normalise_rows(U, rows, mean, inv_std, out):
    """out[i] = (U[rows[i]] - mean) * inv_std, in float64, stored in out's dtype."""
    for i in range(rows.shape[0]):
        r = rows[i]
        for j in range(U.shape[1]):
            out[i, j] = (np.float64(U[r, j]) - mean[j]) * inv_std[j]

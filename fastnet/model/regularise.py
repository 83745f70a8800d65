"""Regularisers for long runs (issue 17): soft targets and dropout masks, as arrays.

Pure functions: the random draws come from a generator handed in (the training layer seeds
one per update step, so runs are reproducible and resume bit for bit); nothing here is used
at test time.

* :func:`smoothed_targets` -- label smoothing: ``T = (1 - eps) Y + eps / K`` with Y the one-hot
  labels. The network is then trained on the cross-entropy against T, whose gradient w.r.t.
  the scores is ``P - T`` (eq 21 with T for Y; ``softmax_xent_soft`` of the backends).
* :func:`mixup` -- MixUp (Zhang et al., 2018): inputs and targets mixed with a permutation of
  the batch, ``x_i <- lam x_i + (1 - lam) x_pi(i)``, ``t_i <- lam t_i + (1 - lam) t_pi(i)``.
* :func:`dropout_masks` -- inverted dropout: per hidden layer a mask D with entries 0 (with
  probability p) or 1 / (1 - p), so ``x * D`` has the expectation of x and test time needs
  no rescaling (the network is evaluated without any mask).

Decoupled weight decay (AdamW) is an update rule: :func:`fastnet.model.optim.decoupled_decay`.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def one_hot(y: NDArray, K: int, dtype) -> NDArray:
    """The one-hot rows Y (n, K) of labels y (n,) in 0..K-1."""
    Y = np.zeros((len(y), K), dtype)
    Y[np.arange(len(y)), y] = 1
    return Y


def smoothed_targets(y: NDArray, K: int, eps: float, dtype) -> NDArray:
    """Label smoothing: ``T = (1 - eps) Y + eps / K`` (n, K), each row a distribution.
    ``eps = 0`` gives the one-hot rows exactly."""
    dt = np.dtype(dtype).type
    T = np.full((len(y), K), dt(eps / K), dtype)
    T[np.arange(len(y)), y] += dt(1 - eps)
    return T


def mixup(X: NDArray, T: NDArray, lam: float, perm: NDArray) -> tuple[NDArray, NDArray]:
    """MixUp of a batch with the permutation ``perm`` of itself: ``lam X + (1 - lam) X[perm]``
    and ``lam T + (1 - lam) T[perm]`` (new arrays of X's and T's dtype). ``lam = 1`` gives the
    batch itself."""
    dx, dT = X.dtype.type, T.dtype.type
    return dx(lam) * X + dx(1 - lam) * X[perm], dT(lam) * T + dT(1 - lam) * T[perm]


def mixup_draw(rng: np.random.Generator, n: int, alpha: float) -> tuple[float, NDArray]:
    """The mixing weight lam ~ Beta(alpha, alpha) and the permutation of n rows, one per batch
    (as in Zhang et al.); lam is drawn first."""
    return float(rng.beta(alpha, alpha)), rng.permutation(n)


def dropout_masks(rng: np.random.Generator, n: int, widths, p: float, dtype) -> list[NDArray]:
    """One inverted-dropout mask (n, m) per hidden layer of the given widths: each entry is
    dropped (0) with probability p, else 1 / (1 - p). Uniforms are drawn in float64, layer by
    layer, row-major."""
    dt = np.dtype(dtype).type
    keep = dt(1 / (1 - p))
    return [np.where(rng.random((n, m)) >= p, keep, dt(0)) for m in widths]

"""Checks at the op boundary, shared by every backend so that all of them fail alike.

Each helper returns an array the kernels can trust: C-contiguous, of the expected float dtype
and shape (a copy is made only when the layout or the dtype of an integer label array must
change). Anything that cannot be converted safely is refused with one sentence naming the op,
the argument, what it got and what was expected, e.g.
``bn_relu_forward_train: gamma has shape (49,), expected (50,) to match S.shape[1]``.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class OpInputError(ValueError):
    """An op was given an array of the wrong dtype, shape or layout."""


def _float_dtype(op: str, name: str, a: np.ndarray, dtype: np.dtype | None) -> np.dtype:
    if a.dtype not in FLOAT_DTYPES:
        raise OpInputError(f"{op}: {name} has dtype {a.dtype}, expected float32 or float64")
    if dtype is not None and a.dtype != dtype:
        raise OpInputError(f"{op}: {name} has dtype {a.dtype}, expected {np.dtype(dtype)} like the other arrays")
    return a.dtype


def matrix(op: str, name: str, a, dtype=None, shape: tuple | None = None, why: str = "") -> NDArray:
    """A 2-D float array, C-contiguous (copied only if it is not), optionally of a fixed shape."""
    if not isinstance(a, np.ndarray):
        raise OpInputError(f"{op}: {name} is a {type(a).__name__}, expected a numpy array")
    _float_dtype(op, name, a, dtype)
    if a.ndim != 2:
        raise OpInputError(f"{op}: {name} has {a.ndim} dimensions (shape {a.shape}), expected a 2-D (n, m) array")
    if shape is not None and a.shape != tuple(shape):
        raise OpInputError(f"{op}: {name} has shape {a.shape}, expected {tuple(shape)}{why}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise OpInputError(f"{op}: {name} has shape {a.shape}, expected no empty dimension")
    return np.ascontiguousarray(a)


def vector(op: str, name: str, a, m: int, dtype, why: str = "") -> NDArray:
    """A 1-D float array of length m and the given dtype."""
    if not isinstance(a, np.ndarray):
        raise OpInputError(f"{op}: {name} is a {type(a).__name__}, expected a numpy array")
    _float_dtype(op, name, a, dtype)
    if a.shape != (m,):
        raise OpInputError(f"{op}: {name} has shape {a.shape}, expected ({m},){why}")
    return np.ascontiguousarray(a)


def labels(op: str, y, n: int, K: int) -> NDArray:
    """Integer class labels (n,) in 0..K-1, as intp; out-of-range labels would index out of bounds."""
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu":
        got = y.dtype if isinstance(y, np.ndarray) else type(y).__name__
        raise OpInputError(f"{op}: y has type {got}, expected an integer numpy array of class labels")
    if y.shape != (n,):
        raise OpInputError(f"{op}: y has shape {y.shape}, expected ({n},) to match the number of rows")
    if n and (y.min() < 0 or y.max() >= K):
        raise OpInputError(f"{op}: y has labels outside 0..{K - 1}")
    return np.ascontiguousarray(y, dtype=np.intp)


def inplace_target(op: str, name: str, a) -> NDArray:
    """An array an ``_inplace`` op may write to: it cannot be copied, so it must already be right."""
    if not isinstance(a, np.ndarray):
        raise OpInputError(f"{op}: {name} is a {type(a).__name__}, expected a numpy array")
    _float_dtype(op, name, a, None)
    if not a.flags.c_contiguous:
        raise OpInputError(f"{op}: {name} is not C-contiguous; an in-place update needs the array itself")
    if not a.flags.writeable:
        raise OpInputError(f"{op}: {name} is read-only; an in-place update needs a writeable array")
    return a


def like(op: str, name: str, a, target_name: str, target: NDArray) -> NDArray:
    """An array of exactly ``target``'s shape and dtype (a gradient for an in-place update)."""
    if not isinstance(a, np.ndarray):
        raise OpInputError(f"{op}: {name} is a {type(a).__name__}, expected a numpy array like {target_name}")
    if a.shape != target.shape or a.dtype != target.dtype:
        raise OpInputError(
            f"{op}: {name} has shape {a.shape} and dtype {a.dtype}, expected shape {target.shape} and dtype {target.dtype} like {target_name}"
        )
    return a


def scalar(op: str, name: str, x, *, positive: bool = False, nonnegative: bool = False) -> float:
    """A finite Python float (eps, lam, eta, ...)."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        raise OpInputError(f"{op}: {name} is {x!r}, expected a number") from None
    # math.isfinite, not np.isfinite: same answer for a Python float, 15x cheaper, and this
    # runs on every op call (small-batch ops take only a few microseconds in all).
    if not math.isfinite(f) or (positive and f <= 0) or (nonnegative and f < 0):
        need = "a positive" if positive else "a non-negative" if nonnegative else "a finite"
        raise OpInputError(f"{op}: {name} is {x!r}, expected {need} finite number")
    return f


def inplace_like(op: str, name: str, a, target_name: str, target: NDArray, **others: NDArray) -> NDArray:
    """A second array an ``_inplace`` op writes to (Adam's moments): like ``target`` in shape
    and dtype, C-contiguous and writeable, and sharing memory neither with it nor with any of
    ``others`` (name=array): written in place, an alias would change what the others read."""
    a = inplace_target(op, name, a)
    like(op, name, a, target_name, target)
    for other_name, other in {target_name: target, **others}.items():
        if np.shares_memory(a, other):
            raise OpInputError(f"{op}: {name} shares memory with {other_name}; each needs its own array")
    return a


def adam_scalars(op: str, eta, beta1, beta2, eps, t) -> tuple[float, float, float, float, int]:
    """Adam's scalars checked: eta >= 0, beta1 and beta2 in [0, 1), eps > 0, t a whole number >= 1."""
    eta = scalar(op, "eta", eta, nonnegative=True)
    beta1 = scalar(op, "beta1", beta1, nonnegative=True)
    beta2 = scalar(op, "beta2", beta2, nonnegative=True)
    eps = scalar(op, "eps", eps, positive=True)
    for name, b in (("beta1", beta1), ("beta2", beta2)):
        if not b < 1:
            raise OpInputError(f"{op}: {name} is {b!r}, expected a number in [0, 1)")
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1:
        raise OpInputError(f"{op}: t is {t!r}, expected a whole number >= 1 (the step, counted from 1)")
    return eta, beta1, beta2, eps, int(t)


# ------------------------------------------------------------- the arguments of whole ops
# What every backend's batch-norm, ReLU and softmax ops check, in one place (the reference
# and the compiled backends call these, so they refuse the same inputs with the same words).


def bn_forward_args(op: str, S, gamma, beta, eps, mu=None, v=None, *, train: bool):
    """S (n, m); gamma, beta -- and, for eval ops, the running mu, v -- (m,) of S's dtype;
    eps > 0; train ops need n >= 2 rows to estimate a variance. Returns them checked:
    (S, gamma, beta, eps) or (S, gamma, beta, mu, v, eps)."""
    S = matrix(op, "S", S)
    m, why = S.shape[1], " to match S.shape[1]"
    gamma = vector(op, "gamma", gamma, m, S.dtype, why)
    beta = vector(op, "beta", beta, m, S.dtype, why)
    if not train:
        mu = vector(op, "mu", mu, m, S.dtype, why)
        v = vector(op, "v", v, m, S.dtype, why)
    eps = scalar(op, "eps", eps, positive=True)
    if train:
        if S.shape[0] < 2:
            raise OpInputError(f"{op}: S has {S.shape[0]} row, expected at least 2 to estimate a variance")
        return S, gamma, beta, eps
    return S, gamma, beta, mu, v, eps


def bn_backward_args(op: str, G, S_hat, gamma, v, eps, X=None):
    """G (n, m); X (the layer output, for the ReLU mask; ops without the mask pass None) and
    S_hat (n, m); gamma, v (m,); eps > 0. Returns (G, X, S_hat, gamma, v, eps) checked."""
    G = matrix(op, "G", G)
    m = G.shape[1]
    if X is not None:
        X = matrix(op, "X", X, G.dtype, G.shape, " to match G")
    S_hat = matrix(op, "S_hat", S_hat, G.dtype, G.shape, " to match G")
    gamma = vector(op, "gamma", gamma, m, G.dtype, " to match G.shape[1]")
    v = vector(op, "v", v, m, G.dtype, " to match G.shape[1]")
    eps = scalar(op, "eps", eps, positive=True)
    return G, X, S_hat, gamma, v, eps


def adam_args(op: str, theta, grad, m, v, eta, beta1, beta2, eps, t):
    """Adam's arrays (theta, m, v writeable targets of one shape and dtype, grad like theta, no
    two sharing memory) and scalars, checked; returns them in that order."""
    theta = inplace_target(op, "theta", theta)
    grad = like(op, "grad", grad, "theta", theta)
    m = inplace_like(op, "m", m, "theta", theta, grad=grad)
    v = inplace_like(op, "v", v, "theta", theta, grad=grad, m=m)
    return (theta, grad, m, v, *adam_scalars(op, eta, beta1, beta2, eps, t))

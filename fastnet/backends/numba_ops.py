"""The Numba backend: the reference ops as fused, compiled loops.

Every op has the name and signature of its twin in ``reference.py``: a method of
:class:`~fastnet.backends.compiled.CompiledOps` (checks as the reference's, outputs allocated)
over the ``@njit`` kernels below, ``<kernel_name(op)>_kernel``, which fill the outputs. Kernels:

* loop rows outer, columns inner (C order, so the inner loop is contiguous and vectorises);
* accumulate float32 sums in float64 (a sum over n <= 512 rows then loses nothing that matters
  at float32 precision), and compute means and variances in two passes, never E[x^2] - E[x]^2;
* draw no random numbers, read no module globals and call no BLAS;
* are compiled with ``cache=True`` (a second process loads machine code from ``__pycache__``
  instead of compiling) and with :data:`FASTMATH`.

``linear_forward`` and ``linear_backward`` are matrix products; a loop written here would only
be a slower BLAS, so this module re-exports the reference ops, which call BLAS through NumPy.
So it does the soft-target cross-entropy (``REFERENCE_OPS``: O(n K) work, issue 17).

Start-up (measured 2026-11-25, AMD EPYC, 2 cores, numba 0.68.1): importing this module takes
~0.3 s (Numba itself); the first call of each kernel then compiles it, 4-6 s for all of them
in float32 and float64 with an empty cache, or loads it from the cache, ~0.7 s for all of
them. ``tests/backends/test_dispatch.py`` checks that a second process compiles nothing.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from fastnet.backends.checks import FLOAT_DTYPES
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

NAME = "numba"

__all__ = [*OPS, "BNGrad", "BNTrain", "LinGrad", "Xent"]

# LLVM fast-math flags: reassociate (vectorised reductions), contract (FMA), approximate
# reciprocals and functions, ignore the sign of zero. Deliberately *not* "nnan"/"ninf": with
# them LLVM may assume no NaN exists and fold it away, and a diverging run must still show NaN.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def fast_kernel(kernel=None, *, nogil: bool = False, parallel: bool = False):
    """``@njit(cache=True, fastmath=FASTMATH, error_model="numpy")``, uncached if need be;
    ``@fast_kernel(nogil=True)`` also releases the GIL while the kernel runs; ``parallel=True``
    runs its ``prange`` loops on Numba's threads.

    ``error_model="numpy"``: a float division by zero gives inf/NaN as in NumPy (and the
    reference) instead of raising ZeroDivisionError, so no division carries a branch that
    stops LLVM vectorising the loop around it (Adam's loop ran 5x slower with one).

    Numba caches next to this file or, in a read-only install, in the user's cache directory;
    when neither is writable it raises RuntimeError at decoration time. A backend that then
    compiles on every start is slower to start but still correct, so that is what we do.
    """
    if kernel is None:
        return lambda k: fast_kernel(k, nogil=nogil, parallel=parallel)
    options = dict(nogil=nogil, parallel=parallel, fastmath=FASTMATH, error_model="numpy")
    try:
        return njit(cache=True, **options)(kernel)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(cache=False, **options)(kernel)


# ------------------------------------------------------------------------------- kernels


@fast_kernel
def bias_relu_forward_kernel(Z, b, X):
    n, m = Z.shape
    for i in range(n):
        for j in range(m):
            s = Z[i, j] + b[j]  # (1), in the array dtype like the reference
            X[i, j] = 0 if s < 0 else s  # (2); written so that NaN passes through


@fast_kernel
def relu_backward_kernel(G, X, G_out):
    n, m = G.shape
    for i in range(n):
        for j in range(m):
            # (24)/(30) as a product, like the reference: NaN * 0 stays NaN.
            G_out[i, j] = G[i, j] * (X[i, j] > 0)


# Batch norm with and without the ReLU (after it, Exercise 4.1(a)): each pair of kernels is one
# body, inlined into both (``inline="always"``, so each is compiled as if written out, under the
# kernel's flags) with ``relu`` a constant that the compiler folds away.


@njit(inline="always")
def _bn_forward_train(S, gamma, beta, eps, X, S_hat, mu, v, relu):
    # Column sums in float64; the element-wise work in the array dtype, as the reference does
    # it (float32 lanes are twice as many per vector, and every result is rounded to it anyway).
    n, m = S.shape
    mean = np.zeros(m, dtype=np.float64)
    for i in range(n):  # (13), summed in float64
        for j in range(m):
            mean[j] += S[i, j]
    for j in range(m):
        mu[j] = mean[j] / n
    ssq = np.zeros(m, dtype=np.float64)
    for i in range(n):  # (14): a second pass over S - mu, never E[s^2] - E[s]^2
        for j in range(m):
            # d is taken against mu' = mu rounded to the dtype. That costs nothing that shows:
            # sum_i (s_i - mu')^2 = sum_i (s_i - mu)^2 + n (mu - mu')^2, the cross term being 0.
            d = S[i, j] - mu[j]
            ssq[j] += d * d
    inv_sd = np.empty(m, dtype=S.dtype)
    for j in range(m):
        v[j] = ssq[j] / n  # biased, as eq (14)
        inv_sd[j] = 1.0 / np.sqrt(ssq[j] / n + eps)  # (11)
    for i in range(n):
        for j in range(m):
            s_hat = (S[i, j] - mu[j]) * inv_sd[j]  # (15)
            S_hat[i, j] = s_hat
            x = gamma[j] * s_hat + beta[j]  # (16)
            X[i, j] = (0 if x < 0 else x) if relu else x  # (17); NaN passes through


@fast_kernel
def bn_relu_forward_train_kernel(S, gamma, beta, eps, X, S_hat, mu, v):
    _bn_forward_train(S, gamma, beta, eps, X, S_hat, mu, v, True)  # (13)-(17)


@fast_kernel
def bn_forward_train_kernel(S, gamma, beta, eps, X, S_hat, mu, v):
    _bn_forward_train(S, gamma, beta, eps, X, S_hat, mu, v, False)  # (13)-(16)


@njit(inline="always")
def _bn_forward_eval(S, gamma, beta, mu, v, eps, X, relu):
    n, m = S.shape
    scale = np.empty(m, dtype=S.dtype)
    for j in range(m):
        scale[j] = gamma[j] / np.sqrt(v[j] + eps)  # gamma * (v + eps)^-1/2, (7) with (11)
    for i in range(n):
        for j in range(m):
            # (S - mu) first: folding mu into the shift would cancel when |mu| >> sd.
            x = (S[i, j] - mu[j]) * scale[j] + beta[j]  # (6), (7)
            X[i, j] = (0 if x < 0 else x) if relu else x  # (8); NaN passes through


@fast_kernel
def bn_relu_forward_eval_kernel(S, gamma, beta, mu, v, eps, X):
    _bn_forward_eval(S, gamma, beta, mu, v, eps, X, True)  # (6)-(8)


@fast_kernel
def bn_forward_eval_kernel(S, gamma, beta, mu, v, eps, X):
    _bn_forward_eval(S, gamma, beta, mu, v, eps, X, False)  # (6)-(7)


@njit(inline="always")
def _bn_backward(G, X, S_hat, gamma, v, eps, G_out, dgamma, dbeta, relu):
    # Derivation of the fused form from eqs (31)-(37). Let Gm = G * Ind(X > 0) (24)/(30), or
    # Gm = G without the ReLU, and Gg = gamma * Gm (26). With ve = v + eps, sigma1 = ve^-1/2
    # (31), sigma2 = ve^-3/2 (32), and D = S - mu = S_hat * ve^1/2 by (15):
    #   G2 * D = Gg * ve^-3/2 * S_hat * ve^1/2 = sigma1^2 * Gg * S_hat       (34), (35)
    #   c = sum_i G2 * D = n * sigma1^2 * mean_i(Gg * S_hat)                  (36)
    #   (1/n) D * c = sigma1 * S_hat * mean_i(Gg * S_hat)
    #   (1/n) G1 1  = sigma1 * mean_i(Gg)                                      (33)
    # so (37) is G_out = sigma1 * (Gg - mean_i(Gg) - S_hat * mean_i(Gg * S_hat)).
    # Since gamma is constant down a column, mean_i(Gg) = gamma * dbeta and
    # mean_i(Gg * S_hat) = gamma * dgamma (25), hence
    #   G_out = sigma1 * gamma * (Gm - dbeta - S_hat * dgamma):
    # one pass for the two column sums, one pass to write G_out; D, G1, G2 never exist.
    # Gm is of G's dtype either way (float * bool is float), so both variants round alike.
    n, m = G.shape
    sum_g = np.zeros(m, dtype=np.float64)
    sum_gs = np.zeros(m, dtype=np.float64)
    for i in range(n):  # the two column sums of (25), in float64
        for j in range(m):
            g = G[i, j] * (X[i, j] > 0) if relu else G[i, j]  # (24)/(30); NaN * 0 stays NaN
            sum_g[j] += g
            sum_gs[j] += g * S_hat[i, j]
    scale = np.empty(m, dtype=G.dtype)
    for j in range(m):
        dbeta[j] = sum_g[j] / n  # (25)
        dgamma[j] = sum_gs[j] / n  # (25)
        scale[j] = gamma[j] / np.sqrt(v[j] + eps)  # gamma * sigma1, (26) and (31)
    for i in range(n):
        for j in range(m):
            g = G[i, j] * (X[i, j] > 0) if relu else G[i, j]
            G_out[i, j] = scale[j] * (g - dbeta[j] - S_hat[i, j] * dgamma[j])  # (37)


@fast_kernel
def bn_relu_backward_kernel(G, X, S_hat, gamma, v, eps, G_out, dgamma, dbeta):
    _bn_backward(G, X, S_hat, gamma, v, eps, G_out, dgamma, dbeta, True)  # (24)-(27), (30)-(37)


@fast_kernel
def bn_backward_kernel(G, S_hat, gamma, v, eps, G_out, dgamma, dbeta):
    _bn_backward(G, G, S_hat, gamma, v, eps, G_out, dgamma, dbeta, False)  # (25)-(27), (31)-(37); X unread


@fast_kernel
def softmax_xent_kernel(S, y, P, loss):
    n, K = S.shape
    e = np.empty(K, dtype=np.float64)
    for i in range(n):
        # Shift by the row maximum (softmax is invariant to it): exp never overflows and the
        # largest term is exp(0) = 1, so the total is >= 1 and its log is finite.
        mx = np.float64(S[i, 0])
        for j in range(1, K):
            if S[i, j] > mx:
                mx = np.float64(S[i, j])
        total = 0.0
        for j in range(K):
            e[j] = np.exp(S[i, j] - mx)  # float64 even for float32 input
            total += e[j]
        inv_total = 1.0 / total
        for j in range(K):
            P[i, j] = e[j] * inv_total  # (4)/(19)
        # -log p_{i,y} = log(sum_j exp(z_j)) - z_y with z = s - max: finite where p underflows.
        loss[i] = np.log(total) - (S[i, y[i]] - mx)


@fast_kernel
def softmax_xent_backward_kernel(P, y, G):
    n, K = P.shape
    for i in range(n):
        for j in range(K):
            G[i, j] = P[i, j]
        G[i, y[i]] -= 1  # (21): G = -(Y - P), Y one-hot


@fast_kernel
def sgd_update_kernel(theta, grad, eta):
    # eta arrives in theta's dtype, so float32 parameters are updated in float32 as in NumPy.
    for k in range(theta.shape[0]):
        theta[k] -= eta * grad[k]


@fast_kernel
def adam_update_kernel(theta, grad, m, v, beta1, omb1, beta2, omb2, step, c2, eps):
    # All scalars arrive in theta's dtype (omb = 1 - beta, rounded once as the reference does);
    # one pass over the four arrays instead of the reference's ten.
    for k in range(theta.shape[0]):
        g = grad[k]
        mk = beta1 * m[k] + omb1 * g
        vk = beta2 * v[k] + omb2 * (g * g)
        m[k] = mk
        v[k] = vk
        theta[k] -= step * mk / (np.sqrt(vk * c2) + eps)


# ------------------------------------------------------------------------------- the ops
# Checks, output allocation and scalar casts are shared with the Cython backend (compiled.py);
# one kernel serves both dtypes (Numba compiles a specialisation for each on first use).

_KERNELS = {name: globals()[f"{name}_kernel"] for name in map(kernel_name, KERNEL_OPS)}
_OPS = CompiledOps({dtype: _KERNELS for dtype in FLOAT_DTYPES})


def kernels() -> tuple:
    """Every op kernel (Numba dispatchers), for :func:`fastnet.backends.numba_step.start_cost`."""
    return tuple(_KERNELS.values())

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

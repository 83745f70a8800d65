"""The Numba backend: the reference ops as fused, compiled loops.

Every public function has the name and signature of its twin in ``reference.py``, checks its
inputs with the shared ``_checks`` helpers exactly as the reference does (so every backend
fails alike), allocates the outputs, and hands them to a private ``@njit`` kernel that fills
them. Kernels:

* loop rows outer, columns inner (C order, so the inner loop is contiguous and vectorises);
* accumulate float32 sums in float64 (a sum over n <= 512 rows then loses nothing that matters
  at float32 precision), and compute means and variances in two passes, never E[x^2] - E[x]^2;
* draw no random numbers, read no module globals and call no BLAS;
* are compiled with ``cache=True`` (a second process loads machine code from ``__pycache__``
  instead of compiling) and with :data:`FASTMATH`.

``linear_forward`` and ``linear_backward`` are matrix products; a loop written here would only
be a slower BLAS, so this module re-exports the reference ops, which call BLAS through NumPy.

Start-up (measured 2026-11-25, AMD EPYC, 2 cores, numba 0.68.1): importing this module takes
~0.3 s (Numba itself); the first call of each kernel then compiles it, 4-6 s for all of them
in float32 and float64 with an empty cache, or loads it from the cache, ~0.7 s for all of
them. ``tests/test_dispatch.py`` checks that a second process compiles nothing.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from . import _checks as chk
from .reference import BNGrad, BNTrain, LinGrad, Xent, linear_backward, linear_forward

NAME = "numba"

__all__ = [
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
    "bn_forward_train",
    "bn_forward_eval",
    "bn_backward",
    "adam_update_inplace",
    "BNGrad",
    "BNTrain",
    "LinGrad",
    "Xent",
]

# LLVM fast-math flags: reassociate (vectorised reductions), contract (FMA), approximate
# reciprocals and functions, ignore the sign of zero. Deliberately *not* "nnan"/"ninf": with
# them LLVM may assume no NaN exists and fold it away, and a diverging run must still show NaN.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def _njit(kernel=None, *, nogil: bool = False):
    """``@njit(cache=True, fastmath=FASTMATH, error_model="numpy")``, uncached if need be;
    ``@_njit(nogil=True)`` also releases the GIL while the kernel runs.

    ``error_model="numpy"``: a float division by zero gives inf/NaN as in NumPy (and the
    reference) instead of raising ZeroDivisionError, so no division carries a branch that
    stops LLVM vectorising the loop around it (Adam's loop ran 5x slower with one).

    Numba caches next to this file or, in a read-only install, in the user's cache directory;
    when neither is writable it raises RuntimeError at decoration time. A backend that then
    compiles on every start is slower to start but still correct, so that is what we do.
    """
    if kernel is None:
        return lambda k: _njit(k, nogil=nogil)
    try:
        return njit(cache=True, nogil=nogil, fastmath=FASTMATH, error_model="numpy")(kernel)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(cache=False, nogil=nogil, fastmath=FASTMATH, error_model="numpy")(kernel)


# ------------------------------------------------------------------------------- kernels


@_njit
def _bias_relu_forward_kernel(Z, b, X):
    n, m = Z.shape
    for i in range(n):
        for j in range(m):
            s = Z[i, j] + b[j]  # (1), in the array dtype like the reference
            X[i, j] = 0 if s < 0 else s  # (2); written so that NaN passes through


@_njit
def _relu_backward_kernel(G, X, G_out):
    n, m = G.shape
    for i in range(n):
        for j in range(m):
            # (24)/(30) as a product, like the reference: NaN * 0 stays NaN.
            G_out[i, j] = G[i, j] * (X[i, j] > 0)


@_njit
def _bn_relu_forward_train_kernel(S, gamma, beta, eps, X, S_hat, mu, v):
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
            X[i, j] = 0 if x < 0 else x  # (17); NaN passes through


@_njit
def _bn_relu_forward_eval_kernel(S, gamma, beta, mu, v, eps, X):
    n, m = S.shape
    scale = np.empty(m, dtype=S.dtype)
    for j in range(m):
        scale[j] = gamma[j] / np.sqrt(v[j] + eps)  # gamma * (v + eps)^-1/2, (7) with (11)
    for i in range(n):
        for j in range(m):
            # (S - mu) first: folding mu into the shift would cancel when |mu| >> sd.
            x = (S[i, j] - mu[j]) * scale[j] + beta[j]  # (6), (7)
            X[i, j] = 0 if x < 0 else x  # (8); NaN passes through


@_njit
def _bn_relu_backward_kernel(G, X, S_hat, gamma, v, eps, G_out, dgamma, dbeta):
    # Derivation of the fused form from eqs (31)-(37). Let Gm = G * Ind(X > 0) (24)/(30) and
    # Gg = gamma * Gm (26). With ve = v + eps, sigma1 = ve^-1/2 (31), sigma2 = ve^-3/2 (32),
    # and D = S - mu = S_hat * ve^1/2 by (15):
    #   G2 * D = Gg * ve^-3/2 * S_hat * ve^1/2 = sigma1^2 * Gg * S_hat       (34), (35)
    #   c = sum_i G2 * D = n * sigma1^2 * mean_i(Gg * S_hat)                  (36)
    #   (1/n) D * c = sigma1 * S_hat * mean_i(Gg * S_hat)
    #   (1/n) G1 1  = sigma1 * mean_i(Gg)                                      (33)
    # so (37) is G_out = sigma1 * (Gg - mean_i(Gg) - S_hat * mean_i(Gg * S_hat)).
    # Since gamma is constant down a column, mean_i(Gg) = gamma * dbeta and
    # mean_i(Gg * S_hat) = gamma * dgamma (25), hence
    #   G_out = sigma1 * gamma * (Gm - dbeta - S_hat * dgamma):
    # one pass for the two column sums, one pass to write G_out; D, G1, G2 never exist.
    n, m = G.shape
    sum_g = np.zeros(m, dtype=np.float64)
    sum_gs = np.zeros(m, dtype=np.float64)
    for i in range(n):  # the two column sums of (25), in float64
        for j in range(m):
            g = G[i, j] * (X[i, j] > 0)  # (24)/(30); NaN * 0 stays NaN
            sum_g[j] += g
            sum_gs[j] += g * S_hat[i, j]
    scale = np.empty(m, dtype=G.dtype)
    for j in range(m):
        dbeta[j] = sum_g[j] / n  # (25)
        dgamma[j] = sum_gs[j] / n  # (25)
        scale[j] = gamma[j] / np.sqrt(v[j] + eps)  # gamma * sigma1, (26) and (31)
    for i in range(n):
        for j in range(m):
            g = G[i, j] * (X[i, j] > 0)
            G_out[i, j] = scale[j] * (g - dbeta[j] - S_hat[i, j] * dgamma[j])  # (37)


@_njit
def _softmax_xent_kernel(S, y, P, loss):
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


@_njit
def _softmax_xent_backward_kernel(P, y, G):
    n, K = P.shape
    for i in range(n):
        for j in range(K):
            G[i, j] = P[i, j]
        G[i, y[i]] -= 1  # (21): G = -(Y - P), Y one-hot


@_njit
def _sgd_update_kernel(theta, grad, eta):
    # eta arrives in theta's dtype, so float32 parameters are updated in float32 as in NumPy.
    for k in range(theta.shape[0]):
        theta[k] -= eta * grad[k]


@_njit
def _bn_forward_train_kernel(S, gamma, beta, eps, X, S_hat, mu, v):
    # _bn_relu_forward_train_kernel without the ReLU (batch norm after the ReLU).
    n, m = S.shape
    mean = np.zeros(m, dtype=np.float64)
    for i in range(n):  # (13), summed in float64
        for j in range(m):
            mean[j] += S[i, j]
    for j in range(m):
        mu[j] = mean[j] / n
    ssq = np.zeros(m, dtype=np.float64)
    for i in range(n):  # (14): two passes
        for j in range(m):
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
            X[i, j] = gamma[j] * s_hat + beta[j]  # (16)


@_njit
def _bn_forward_eval_kernel(S, gamma, beta, mu, v, eps, X):
    n, m = S.shape
    scale = np.empty(m, dtype=S.dtype)
    for j in range(m):
        scale[j] = gamma[j] / np.sqrt(v[j] + eps)  # gamma * (v + eps)^-1/2, (7) with (11)
    for i in range(n):
        for j in range(m):
            X[i, j] = (S[i, j] - mu[j]) * scale[j] + beta[j]  # (6), (7); (S - mu) first


@_njit
def _bn_backward_kernel(G, S_hat, gamma, v, eps, G_out, dgamma, dbeta):
    # The fused form of _bn_relu_backward_kernel with Gm = G (no ReLU mask):
    #   G_out = gamma * sigma1 * (G - dbeta - S_hat * dgamma), equal to eqs (31)-(37).
    n, m = G.shape
    sum_g = np.zeros(m, dtype=np.float64)
    sum_gs = np.zeros(m, dtype=np.float64)
    for i in range(n):  # the two column sums of (25), in float64
        for j in range(m):
            g = G[i, j]
            sum_g[j] += g
            sum_gs[j] += g * S_hat[i, j]
    scale = np.empty(m, dtype=G.dtype)
    for j in range(m):
        dbeta[j] = sum_g[j] / n  # (25)
        dgamma[j] = sum_gs[j] / n  # (25)
        scale[j] = gamma[j] / np.sqrt(v[j] + eps)  # gamma * sigma1, (26) and (31)
    for i in range(n):
        for j in range(m):
            G_out[i, j] = scale[j] * (G[i, j] - dbeta[j] - S_hat[i, j] * dgamma[j])  # (37)


@_njit
def _adam_update_kernel(theta, grad, m, v, beta1, omb1, beta2, omb2, step, c2, eps):
    # All scalars arrive in theta's dtype (omb = 1 - beta, rounded once as the reference does);
    # one pass over the four arrays instead of the reference's ten.
    for k in range(theta.shape[0]):
        g = grad[k]
        mk = beta1 * m[k] + omb1 * g
        vk = beta2 * v[k] + omb2 * (g * g)
        m[k] = mk
        v[k] = vk
        theta[k] -= step * mk / (np.sqrt(vk * c2) + eps)


# -------------------------------------------------------------------------------- public


def bias_relu_forward(Z: NDArray, b: NDArray) -> NDArray:
    """Bias and ReLU of a layer without batch norm: ``X = max(0, Z + b)``, eqs (1)-(2).

    Parameters
    ----------
    Z : (n, m) float32/float64, the product X^(l-1) W^T without bias.
    b : (m,) of Z's dtype.

    Returns
    -------
    X : (n, m) array of Z.dtype.
    """
    op = "bias_relu_forward"
    Z = chk.matrix(op, "Z", Z)
    b = chk.vector(op, "b", b, Z.shape[1], Z.dtype, " to match Z.shape[1]")
    X = np.empty_like(Z)
    _bias_relu_forward_kernel(Z, b, X)
    return X


def relu_backward(G: NDArray, X: NDArray) -> NDArray:
    """ReLU mask on the gradient: ``G * Ind(X > 0)``, eqs (24) and (30).

    Parameters
    ----------
    G : (n, m) float32/float64 gradient w.r.t. the layer output.
    X : (n, m) the layer output x^(l) = max(0, .), same dtype.

    Returns
    -------
    (n, m) array of G.dtype.
    """
    op = "relu_backward"
    G = chk.matrix(op, "G", G)
    X = chk.matrix(op, "X", X, G.dtype, G.shape, " to match G")
    G_out = np.empty_like(G)
    _relu_backward_kernel(G, X, G_out)
    return G_out


def bn_relu_forward_train(S: NDArray, gamma: NDArray, beta: NDArray, eps: float) -> BNTrain:
    """Batch norm with batch statistics, scale-shift and ReLU, fused: eqs (13)-(17).

    Parameters
    ----------
    S : (n, m) float32/float64 un-normalised scores, eq (12); n >= 2.
    gamma, beta : (m,) scale and shift, S's dtype.
    eps : the small constant of eq (11).

    Returns
    -------
    BNTrain(X, S_hat, mu, v), arrays of S.dtype; v is the biased variance of eq (14).

    Notes
    -----
    One kernel: mean pass, variance pass over S - mu, then S_hat and X in one sweep.
    """
    op = "bn_relu_forward_train"
    S = chk.matrix(op, "S", S)
    m = S.shape[1]
    gamma = chk.vector(op, "gamma", gamma, m, S.dtype, " to match S.shape[1]")
    beta = chk.vector(op, "beta", beta, m, S.dtype, " to match S.shape[1]")
    eps = chk.scalar(op, "eps", eps, positive=True)
    if S.shape[0] < 2:
        raise chk.OpInputError(f"{op}: S has {S.shape[0]} row, expected at least 2 to estimate a variance")
    X = np.empty_like(S)
    S_hat = np.empty_like(S)
    mu = np.empty(m, S.dtype)
    v = np.empty(m, S.dtype)
    _bn_relu_forward_train_kernel(S, gamma, beta, eps, X, S_hat, mu, v)
    return BNTrain(X, S_hat, mu, v)


def bn_relu_forward_eval(S: NDArray, gamma: NDArray, beta: NDArray, mu: NDArray, v: NDArray, eps: float) -> NDArray:
    """Batch norm with fixed (running) statistics, scale-shift and ReLU: eqs (6)-(8), (11).

    Parameters
    ----------
    S : (n, m) float32/float64 scores.
    gamma, beta, mu, v : (m,) of S's dtype; mu and v are only read.
    eps : as in eq (11).

    Returns
    -------
    X : (n, m) array of S.dtype.
    """
    op = "bn_relu_forward_eval"
    S = chk.matrix(op, "S", S)
    m = S.shape[1]
    gamma = chk.vector(op, "gamma", gamma, m, S.dtype, " to match S.shape[1]")
    beta = chk.vector(op, "beta", beta, m, S.dtype, " to match S.shape[1]")
    mu = chk.vector(op, "mu", mu, m, S.dtype, " to match S.shape[1]")
    v = chk.vector(op, "v", v, m, S.dtype, " to match S.shape[1]")
    eps = chk.scalar(op, "eps", eps, positive=True)
    X = np.empty_like(S)
    _bn_relu_forward_eval_kernel(S, gamma, beta, mu, v, eps, X)
    return X


def bn_relu_backward(G: NDArray, X: NDArray, S_hat: NDArray, gamma: NDArray, v: NDArray, eps: float) -> BNGrad:
    """Back through ReLU, scale-shift and batch norm of one layer, fused: eqs (24)-(27), (30)-(37).

    Parameters
    ----------
    G : (n, m) float32/float64 gradient w.r.t. the layer output x^(l) (before the ReLU mask).
    X, S_hat : (n, m) and v : (m,), from ``bn_relu_forward_train`` of this layer.
    gamma : (m,) scale. eps : as in the forward pass.

    Returns
    -------
    BNGrad(G, dgamma, dbeta), arrays of G.dtype; G = dJ/dS^(l) per sample (no 1/n).

    Notes
    -----
    Computes ``G = sigma1 * gamma * (Gm - dbeta - S_hat * dgamma)`` with ``Gm = G * (X > 0)``,
    algebraically equal to eqs (31)-(37); the derivation is beside the kernel.
    """
    op = "bn_relu_backward"
    G = chk.matrix(op, "G", G)
    n, m = G.shape
    X = chk.matrix(op, "X", X, G.dtype, G.shape, " to match G")
    S_hat = chk.matrix(op, "S_hat", S_hat, G.dtype, G.shape, " to match G")
    gamma = chk.vector(op, "gamma", gamma, m, G.dtype, " to match G.shape[1]")
    v = chk.vector(op, "v", v, m, G.dtype, " to match G.shape[1]")
    eps = chk.scalar(op, "eps", eps, positive=True)
    G_out = np.empty_like(G)
    dgamma = np.empty(m, G.dtype)
    dbeta = np.empty(m, G.dtype)
    _bn_relu_backward_kernel(G, X, S_hat, gamma, v, eps, G_out, dgamma, dbeta)
    return BNGrad(G_out, dgamma, dbeta)


def softmax_xent(S: NDArray, y: NDArray) -> Xent:
    """Softmax probabilities, eqs (4)/(19), and the cross-entropy loss of each sample.

    Parameters
    ----------
    S : (n, K) float32/float64 scores.
    y : (n,) integer labels in 0..K-1.

    Returns
    -------
    Xent(P, loss): P (n, K) and loss (n,), of S.dtype. Max-shifted, as the reference.
    """
    op = "softmax_xent"
    S = chk.matrix(op, "S", S)
    y = chk.labels(op, y, S.shape[0], S.shape[1])
    P = np.empty_like(S)
    loss = np.empty(S.shape[0], S.dtype)
    _softmax_xent_kernel(S, y, P, loss)
    return Xent(P, loss)


def softmax_xent_backward(P: NDArray, y: NDArray) -> NDArray:
    """Gradient of the per-sample cross-entropy w.r.t. the scores: ``G = -(Y - P)``, eq (21).

    Parameters
    ----------
    P : (n, K) float32/float64 probabilities from ``softmax_xent``.
    y : (n,) integer labels in 0..K-1.

    Returns
    -------
    G : (n, K) array of P.dtype.
    """
    op = "softmax_xent_backward"
    P = chk.matrix(op, "P", P)
    y = chk.labels(op, y, P.shape[0], P.shape[1])
    G = np.empty_like(P)
    _softmax_xent_backward_kernel(P, y, G)
    return G


def sgd_update_inplace(theta: NDArray, grad: NDArray, eta: float) -> None:
    """One gradient-descent step on a parameter, in place: ``theta -= eta * grad``.

    Parameters
    ----------
    theta : float32/float64 array of any shape, C-contiguous and writeable; updated in place.
    grad : array of theta's shape and dtype (the full gradient of eq (20)).
    eta : non-negative learning rate.
    """
    op = "sgd_update_inplace"
    theta = chk.inplace_target(op, "theta", theta)
    grad = chk.like(op, "grad", grad, "theta", theta)
    eta = chk.scalar(op, "eta", eta, nonnegative=True)
    # reshape(-1) of a C-contiguous theta is a view, so the kernel writes into theta itself;
    # for grad it copies only if grad is not contiguous.
    _sgd_update_kernel(theta.reshape(-1), grad.reshape(-1), theta.dtype.type(eta))


def bn_forward_train(S: NDArray, gamma: NDArray, beta: NDArray, eps: float) -> BNTrain:
    """Batch norm with batch statistics and scale-shift, no ReLU, fused: eqs (13)-(16).

    Parameters
    ----------
    S : (n, m) float32/float64 values to normalise; n >= 2.
    gamma, beta : (m,) scale and shift, S's dtype.
    eps : the small constant of eq (11).

    Returns
    -------
    BNTrain(X, S_hat, mu, v), arrays of S.dtype; X = gamma * S_hat + beta.
    """
    op = "bn_forward_train"
    S = chk.matrix(op, "S", S)
    m = S.shape[1]
    gamma = chk.vector(op, "gamma", gamma, m, S.dtype, " to match S.shape[1]")
    beta = chk.vector(op, "beta", beta, m, S.dtype, " to match S.shape[1]")
    eps = chk.scalar(op, "eps", eps, positive=True)
    if S.shape[0] < 2:
        raise chk.OpInputError(f"{op}: S has {S.shape[0]} row, expected at least 2 to estimate a variance")
    X = np.empty_like(S)
    S_hat = np.empty_like(S)
    mu = np.empty(m, S.dtype)
    v = np.empty(m, S.dtype)
    _bn_forward_train_kernel(S, gamma, beta, eps, X, S_hat, mu, v)
    return BNTrain(X, S_hat, mu, v)


def bn_forward_eval(S: NDArray, gamma: NDArray, beta: NDArray, mu: NDArray, v: NDArray, eps: float) -> NDArray:
    """Batch norm with fixed statistics and scale-shift, no ReLU: eqs (6)-(7), (11).

    Parameters
    ----------
    S : (n, m) float32/float64.
    gamma, beta, mu, v : (m,) of S's dtype; mu and v are only read.
    eps : as in eq (11).

    Returns
    -------
    X : (n, m) array of S.dtype.
    """
    op = "bn_forward_eval"
    S = chk.matrix(op, "S", S)
    m = S.shape[1]
    gamma = chk.vector(op, "gamma", gamma, m, S.dtype, " to match S.shape[1]")
    beta = chk.vector(op, "beta", beta, m, S.dtype, " to match S.shape[1]")
    mu = chk.vector(op, "mu", mu, m, S.dtype, " to match S.shape[1]")
    v = chk.vector(op, "v", v, m, S.dtype, " to match S.shape[1]")
    eps = chk.scalar(op, "eps", eps, positive=True)
    X = np.empty_like(S)
    _bn_forward_eval_kernel(S, gamma, beta, mu, v, eps, X)
    return X


def bn_backward(G: NDArray, S_hat: NDArray, gamma: NDArray, v: NDArray, eps: float) -> BNGrad:
    """Back through scale-shift and batch norm, no ReLU mask, fused: eqs (25)-(27), (31)-(37).

    Parameters
    ----------
    G : (n, m) float32/float64 gradient w.r.t. the BN output.
    S_hat : (n, m) and v : (m,), from ``bn_forward_train``. gamma : (m,). eps : as forward.

    Returns
    -------
    BNGrad(G, dgamma, dbeta), arrays of G.dtype; G = dJ/d(BN input) per sample (no 1/n).
    """
    op = "bn_backward"
    G = chk.matrix(op, "G", G)
    n, m = G.shape
    S_hat = chk.matrix(op, "S_hat", S_hat, G.dtype, G.shape, " to match G")
    gamma = chk.vector(op, "gamma", gamma, m, G.dtype, " to match G.shape[1]")
    v = chk.vector(op, "v", v, m, G.dtype, " to match G.shape[1]")
    eps = chk.scalar(op, "eps", eps, positive=True)
    G_out = np.empty_like(G)
    dgamma = np.empty(m, G.dtype)
    dbeta = np.empty(m, G.dtype)
    _bn_backward_kernel(G, S_hat, gamma, v, eps, G_out, dgamma, dbeta)
    return BNGrad(G_out, dgamma, dbeta)


def adam_update_inplace(theta: NDArray, grad: NDArray, m: NDArray, v: NDArray, eta: float,
                        beta1: float, beta2: float, eps: float, t: int) -> None:
    """One Adam step on a parameter, in place on theta, m and v, fused (one pass).

    Parameters
    ----------
    theta, m, v : float32/float64 arrays of one shape, C-contiguous, writeable; updated in place.
    grad : array of theta's shape and dtype (the full gradient of eq (20)).
    eta : learning rate. beta1, beta2 : in [0, 1). eps : positive. t : step, from 1.
    """
    op = "adam_update_inplace"
    theta = chk.inplace_target(op, "theta", theta)
    grad = chk.like(op, "grad", grad, "theta", theta)
    m = chk.inplace_like(op, "m", m, "theta", theta, grad=grad)
    v = chk.inplace_like(op, "v", v, "theta", theta, grad=grad, m=m)
    eta, beta1, beta2, eps, t = chk.adam_scalars(op, eta, beta1, beta2, eps, t)
    dt = theta.dtype.type
    _adam_update_kernel(theta.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1), dt(beta1), dt(1 - beta1), dt(beta2),
                        dt(1 - beta2), dt(eta / (1 - beta1 ** t)), dt(1 / (1 - beta2 ** t)), dt(eps))

"""The NumPy reference backend: the readable truth that every kernel is tested against.

Each op follows the equations of ``assignment3.md`` and cites their numbers. The assignment
writes one sample per *column* (d, n); fastnet keeps one sample per *row* (n, d), so every
equation appears transposed: ``s = W x + b`` becomes ``S = X W^T + b`` with ``W`` of shape
(m_out, m_in) exactly as in the assignment.

Contract shared by all backends (see ``fastnet.backends.OPS``):

* arrays are C-contiguous float32 or float64, all of one dtype; vectors are (m,);
  labels ``y`` are integers in 0..K-1; scalars are Python floats;
* inputs are never modified, except by ops whose name ends in ``_inplace``;
* several outputs come back as a NamedTuple named with the assignment's symbols.

The gradients ``G`` that flow backwards carry *no* 1/n factor (eq 21 is ``P - Y``); the 1/n of
the mean over the batch is applied where a parameter gradient is formed (eqs 22, 25, 28).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from fastnet.backends import checks as chk

NAME = "numpy"


class LinGrad(NamedTuple):
    """Gradients of a linear layer: dJ/dW (with the L2 term), dJ/db, and G for the layer below."""

    dW: NDArray
    db: NDArray
    dX: NDArray | None


class BNTrain(NamedTuple):
    """What batch-norm training forward returns: the layer output and what backward needs."""

    X: NDArray  # x^(l) = max(0, gamma * S_hat + beta), eq (17); X > 0 is the ReLU mask
    S_hat: NDArray  # normalised scores, eq (15)
    mu: NDArray  # batch mean, eq (13)
    v: NDArray  # biased batch variance, eq (14)


class BNGrad(NamedTuple):
    """Gradients through ReLU, scale-shift and batch norm of one layer."""

    G: NDArray  # dJ/dS^(l), per sample (no 1/n), eq (37)
    dgamma: NDArray  # eq (25)
    dbeta: NDArray  # eq (25)


class Xent(NamedTuple):
    """Softmax probabilities and the per-sample cross-entropy loss."""

    P: NDArray  # eq (4) / (19)
    loss: NDArray  # l_cross(x_i, y_i) = -log p_{i, y_i}, shape (n,)


# --------------------------------------------------------------------------------- linear


def linear_forward(X: NDArray, W: NDArray, b: NDArray | None = None) -> NDArray:
    """Scores of a linear layer, ``S = X W^T (+ b)``: eqs (1), (3), (12), (18).

    Parameters
    ----------
    X : (n, m_in) float array, the layer input x^(l-1), one sample per row.
    W : (m_out, m_in) float array of the same dtype.
    b : (m_out,) or None. None for layers followed by batch norm, where the bias would be
        subtracted away again (the assignment notes these biases are superfluous).

    Returns
    -------
    S : (n, m_out) array of X.dtype.
    """
    op = "linear_forward"
    X = chk.matrix(op, "X", X)
    W = chk.matrix(op, "W", W, X.dtype)
    if W.shape[1] != X.shape[1]:
        raise chk.OpInputError(f"{op}: W has shape {W.shape}, expected (m_out, {X.shape[1]}) to match X.shape[1]")
    S = X @ W.T
    if b is not None:
        S += chk.vector(op, "b", b, W.shape[0], X.dtype, " to match W.shape[0]")
    return S


def linear_backward(G: NDArray, X: NDArray, W: NDArray, lam: float, need_dX: bool = True) -> LinGrad:
    """Gradients of a linear layer: eqs (22)/(28) for W and b, (23)/(29) for the layer below.

    ``dW = (1/n) G^T X + 2 lam W``, ``db = (1/n) G^T 1``, ``dX = G W`` (before the ReLU mask,
    which ``relu_backward`` / ``bn_relu_backward`` apply: eqs (24)/(30)).

    Parameters
    ----------
    G : (n, m_out) gradient of the per-sample losses w.r.t. this layer's scores S.
    X : (n, m_in) the layer input x^(l-1) kept by the forward pass.
    W : (m_out, m_in) weights.
    lam : L2 coefficient lambda of eq (20).
    need_dX : False for the first layer, whose input needs no gradient.
    """
    op = "linear_backward"
    G = chk.matrix(op, "G", G)
    n = G.shape[0]
    W = chk.matrix(op, "W", W, G.dtype)
    if W.shape[0] != G.shape[1]:
        raise chk.OpInputError(f"{op}: W has shape {W.shape}, expected ({G.shape[1]}, m_in) to match G.shape[1]")
    X = chk.matrix(op, "X", X, G.dtype, (n, W.shape[1]), " to match G.shape[0] and W.shape[1]")
    lam = chk.scalar(op, "lam", lam, nonnegative=True)
    dW = (G.T @ X) / G.dtype.type(n)
    if lam:
        dW += G.dtype.type(2 * lam) * W  # (22)/(28): the L2 term of eq (20)
    db = G.sum(axis=0) / G.dtype.type(n)
    dX = G @ W if need_dX else None  # (23)/(29)
    return LinGrad(dW, db, dX)


# ----------------------------------------------------------------------------------- ReLU


def bias_relu_forward(Z: NDArray, b: NDArray) -> NDArray:
    """Bias and ReLU of a layer without batch norm: ``X = max(0, Z + b)``, eqs (1)-(2).

    Z = X^(l-1) W^T is the product without bias, as returned by ``linear_forward(X, W)``.
    """
    op = "bias_relu_forward"
    Z = chk.matrix(op, "Z", Z)
    b = chk.vector(op, "b", b, Z.shape[1], Z.dtype, " to match Z.shape[1]")
    return np.maximum(Z + b, 0)


def relu_backward(G: NDArray, X: NDArray) -> NDArray:
    """ReLU mask on the gradient: ``G * Ind(X > 0)``, eqs (24) and (30).

    X is the layer's *output* x^(l) = max(0, .), so ``X > 0`` is exactly where the ReLU passed.
    """
    op = "relu_backward"
    G = chk.matrix(op, "G", G)
    X = chk.matrix(op, "X", X, G.dtype, G.shape, " to match G")
    return G * (X > 0)


# ----------------------------------------------------------------------------- batch norm


def bn_relu_forward_train(S: NDArray, gamma: NDArray, beta: NDArray, eps: float) -> BNTrain:
    """Batch norm with batch statistics, scale-shift and ReLU: eqs (13)-(17).

    Parameters
    ----------
    S : (n, m) un-normalised scores s^(l) of the mini-batch, eq (12); n >= 2.
    gamma, beta : (m,) scale and shift.
    eps : the small constant of eq (11).

    Returns
    -------
    BNTrain(X, S_hat, mu, v), arrays of S.dtype. The variance is the biased one (divide by n),
    as eq (14) and the back-propagation equations assume.
    """
    S, gamma, beta, eps = chk.bn_forward_args("bn_relu_forward_train", S, gamma, beta, eps, train=True)
    mu, v, S_hat = _normalise_batch(S, eps)
    X = np.maximum(gamma * S_hat + beta, 0)  # (16), (17)
    return BNTrain(X, S_hat, mu, v)


def _normalise_batch(S: NDArray, eps: float) -> tuple[NDArray, NDArray, NDArray]:
    """Batch mean, biased variance and normalised scores, eqs (13)-(15) with (11)."""
    mu = S.mean(axis=0)  # (13)
    v = ((S - mu) ** 2).mean(axis=0)  # (14): biased, two passes
    S_hat = (S - mu) / np.sqrt(v + S.dtype.type(eps))  # (15) with (11)
    return mu, v, S_hat


def bn_relu_forward_eval(S: NDArray, gamma: NDArray, beta: NDArray, mu: NDArray, v: NDArray, eps: float) -> NDArray:
    """Batch norm with fixed (running) statistics, scale-shift and ReLU: eqs (6)-(8), (11).

    mu, v : (m,) the estimates mu_av, v_av of eqs (38)-(39); they are only read.
    """
    S, gamma, beta, mu, v, eps = chk.bn_forward_args("bn_relu_forward_eval", S, gamma, beta, eps, mu, v, train=False)
    S_hat = (S - mu) / np.sqrt(v + S.dtype.type(eps))  # (6), (11)
    return np.maximum(gamma * S_hat + beta, 0)  # (7), (8)


def bn_relu_backward(G: NDArray, X: NDArray, S_hat: NDArray, gamma: NDArray, v: NDArray, eps: float) -> BNGrad:
    """Back through ReLU, scale-shift and batch norm of one layer: eqs (24)-(27), (30)-(37).

    Parameters
    ----------
    G : (n, m) gradient w.r.t. the layer output x^(l) (before the ReLU mask).
    X, S_hat, v : from ``bn_relu_forward_train`` of this layer.
    gamma : (m,) scale. eps : as in the forward pass.

    Returns
    -------
    BNGrad(G, dgamma, dbeta) with G = dJ/dS^(l) per sample (no 1/n, like the G that came in).

    Notes
    -----
    BatchNormBackPass (eqs 31-37) is written as in the assignment. It needs D = S - mu of
    eq (35); by eq (15), S_hat = D / sqrt(v + eps), so D is recovered as S_hat * sqrt(v + eps)
    rather than keeping S and mu alive until the backward pass.
    """
    G, X, S_hat, gamma, v, eps = chk.bn_backward_args("bn_relu_backward", G, S_hat, gamma, v, eps, X)
    return _scale_shift_and_bn_backward(G * (X > 0), S_hat, gamma, v, eps)  # (24)/(30) first


def _scale_shift_and_bn_backward(G: NDArray, S_hat: NDArray, gamma: NDArray, v: NDArray, eps: float) -> BNGrad:
    """Eqs (25)-(27) and BatchNormBackPass (31)-(37), from the gradient of the BN output."""
    n = G.shape[0]
    one = G.dtype.type(1)
    dgamma = (G * S_hat).sum(axis=0) / n  # (25)
    dbeta = G.sum(axis=0) / n  # (25)
    G = G * gamma  # (26)
    # BatchNormBackPass, eqs (31)-(37)
    ve = v + G.dtype.type(eps)
    sigma1 = ve ** G.dtype.type(-0.5)  # (31)
    sigma2 = ve ** G.dtype.type(-1.5)  # (32)
    G1 = G * sigma1  # (33)
    G2 = G * sigma2  # (34)
    D = S_hat * np.sqrt(ve)  # (35), via (15)
    c = (G2 * D).sum(axis=0)  # (36)
    G = G1 - (one / n) * G1.sum(axis=0) - (one / n) * D * c  # (37)
    return BNGrad(G, dgamma, dbeta)


# ------------------------------------------------------- batch norm without the ReLU (bonus)
# Exercise 4.1(a) puts batch norm *after* the ReLU: x = gamma * BatchNormalize(max(0, s)) + beta.
# These ops are eqs (13)-(16) and (25)-(27), (31)-(37) with the ReLU taken out; the ReLU is
# ``bias_relu_forward`` / ``relu_backward`` before them.


def bn_forward_train(S: NDArray, gamma: NDArray, beta: NDArray, eps: float) -> BNTrain:
    """Batch norm with batch statistics and scale-shift, no ReLU: eqs (13)-(16).

    Parameters
    ----------
    S : (n, m) the values to normalise (with BN after the ReLU: max(0, s^(l))); n >= 2.
    gamma, beta : (m,) scale and shift.
    eps : the small constant of eq (11).

    Returns
    -------
    BNTrain(X, S_hat, mu, v), arrays of S.dtype, with X = gamma * S_hat + beta (eq 16; may be
    negative). The variance is the biased one, as eq (14).
    """
    S, gamma, beta, eps = chk.bn_forward_args("bn_forward_train", S, gamma, beta, eps, train=True)
    mu, v, S_hat = _normalise_batch(S, eps)
    return BNTrain(gamma * S_hat + beta, S_hat, mu, v)  # (16)


def bn_forward_eval(S: NDArray, gamma: NDArray, beta: NDArray, mu: NDArray, v: NDArray, eps: float) -> NDArray:
    """Batch norm with fixed (running) statistics and scale-shift, no ReLU: eqs (6)-(7), (11).

    mu, v : (m,) population estimates (eqs 38-39, PreciseBN or adaptive BN); only read.
    """
    S, gamma, beta, mu, v, eps = chk.bn_forward_args("bn_forward_eval", S, gamma, beta, eps, mu, v, train=False)
    S_hat = (S - mu) / np.sqrt(v + S.dtype.type(eps))  # (6), (11)
    return gamma * S_hat + beta  # (7)


def bn_backward(G: NDArray, S_hat: NDArray, gamma: NDArray, v: NDArray, eps: float) -> BNGrad:
    """Back through scale-shift and batch norm, no ReLU mask: eqs (25)-(27), (31)-(37).

    Parameters
    ----------
    G : (n, m) gradient w.r.t. the BN output gamma * S_hat + beta.
    S_hat, v : from ``bn_forward_train``. gamma : (m,) scale. eps : as in the forward pass.

    Returns
    -------
    BNGrad(G, dgamma, dbeta): G = dJ/d(BN input) per sample (no 1/n, like the G that came in).
    """
    G, _, S_hat, gamma, v, eps = chk.bn_backward_args("bn_backward", G, S_hat, gamma, v, eps)
    return _scale_shift_and_bn_backward(G, S_hat, gamma, v, eps)


# ------------------------------------------------------------------ softmax cross-entropy


def softmax_xent(S: NDArray, y: NDArray) -> Xent:
    """Softmax probabilities, eqs (4)/(19), and the cross-entropy loss of each sample.

    The scores are shifted by their row maximum before exponentiation (softmax is invariant to
    it), so logits of any magnitude give finite probabilities; the loss uses log-sum-exp on the
    shifted scores, so it stays finite where p underflows to 0.
    """
    op = "softmax_xent"
    S = chk.matrix(op, "S", S)
    y = chk.labels(op, y, S.shape[0], S.shape[1])
    Z = S - S.max(axis=1, keepdims=True)
    E = np.exp(Z)
    total = E.sum(axis=1, keepdims=True)
    P = E / total
    loss = np.log(total[:, 0]) - Z[np.arange(S.shape[0]), y]
    return Xent(P, loss)


def softmax_xent_backward(P: NDArray, y: NDArray) -> NDArray:
    """Gradient of the per-sample cross-entropy w.r.t. the scores: ``G = -(Y - P)``, eq (21)."""
    op = "softmax_xent_backward"
    P = chk.matrix(op, "P", P)
    y = chk.labels(op, y, P.shape[0], P.shape[1])
    G = P.copy()
    G[np.arange(P.shape[0]), y] -= 1
    return G


# ---------------------------------------- softmax cross-entropy against soft targets (issue 17)
# Label smoothing and MixUp train against targets T whose rows are distributions over the K
# classes instead of one-hot rows Y. The loss is the cross-entropy against them and eq (21)
# becomes G = P - T (the rows of T sum to 1). Every backend runs these two (REFERENCE_OPS).


def softmax_xent_soft(S: NDArray, T: NDArray) -> Xent:
    """Softmax probabilities, eqs (4)/(19), and each sample's cross-entropy against soft
    targets: ``l_i = -sum_k T_ik log p_ik``.

    Parameters
    ----------
    S : (n, K) float array of scores.
    T : (n, K) array of S's dtype; each row a distribution over the K classes (not checked:
        the callers build them so). A one-hot T gives ``softmax_xent``'s loss exactly.

    Returns
    -------
    Xent(P, loss). log p is taken as the max-shifted scores minus log-sum-exp, as in
    ``softmax_xent``, so it is finite for logits of any magnitude (where p underflows to 0,
    a positive target still costs a finite amount).
    """
    op = "softmax_xent_soft"
    S = chk.matrix(op, "S", S)
    T = chk.matrix(op, "T", T, S.dtype, S.shape, " to match S")
    Z = S - S.max(axis=1, keepdims=True)
    E = np.exp(Z)
    total = E.sum(axis=1, keepdims=True)
    log_P = Z - np.log(total)
    return Xent(E / total, -(T * log_P).sum(axis=1))


def softmax_xent_soft_backward(P: NDArray, T: NDArray) -> NDArray:
    """Gradient of the per-sample cross-entropy against soft targets w.r.t. the scores:
    ``G = P - T``, eq (21) with T for Y (true when each row of T sums to 1)."""
    op = "softmax_xent_soft_backward"
    P = chk.matrix(op, "P", P)
    T = chk.matrix(op, "T", T, P.dtype, P.shape, " to match P")
    return P - T


# ----------------------------------------------------------------------------- parameters


def sgd_update_inplace(theta: NDArray, grad: NDArray, eta: float) -> None:
    """One gradient-descent step on a parameter, in place: ``theta -= eta * grad``.

    grad is the full gradient of eq (20), the L2 term included (``linear_backward`` adds it).
    theta must be C-contiguous and writeable; grad must have its shape and dtype.
    """
    op = "sgd_update_inplace"
    theta = chk.inplace_target(op, "theta", theta)
    grad = chk.like(op, "grad", grad, "theta", theta)
    eta = chk.scalar(op, "eta", eta, nonnegative=True)
    theta -= theta.dtype.type(eta) * grad


def adam_update_inplace(theta: NDArray, grad: NDArray, m: NDArray, v: NDArray, eta: float,
                        beta1: float, beta2: float, eps: float, t: int) -> None:
    """One Adam step (Kingma & Ba, Algorithm 1) on a parameter, in place on theta, m and v.

    ``m = beta1 m + (1 - beta1) g``; ``v = beta2 v + (1 - beta2) g^2``;
    ``theta -= eta * m_hat / (sqrt(v_hat) + eps)`` with the bias corrections
    ``m_hat = m / (1 - beta1^t)``, ``v_hat = v / (1 - beta2^t)``.

    Parameters
    ----------
    theta, m, v : float arrays of one shape and dtype, C-contiguous and writeable; m and v are
        the first and second moment estimates (zeros before the first step), updated in place.
    grad : array of theta's shape and dtype: the full gradient of eq (20), L2 term included
        (so lambda acts as L2 regularisation, not as AdamW's decoupled weight decay).
    eta : non-negative learning rate. beta1, beta2 : decays in [0, 1). eps : positive.
    t : the step number, counted from 1 (it sets the bias corrections).
    """
    theta, grad, m, v, eta, beta1, beta2, eps, t = chk.adam_args("adam_update_inplace", theta, grad, m, v, eta, beta1, beta2, eps, t)
    dt = theta.dtype.type
    m *= dt(beta1)
    m += dt(1 - beta1) * grad
    v *= dt(beta2)
    v += dt(1 - beta2) * (grad * grad)
    step = dt(eta / (1 - beta1 ** t))  # eta / (1 - beta1^t): m_hat's correction folded in
    c2 = dt(1 / (1 - beta2 ** t))  # v_hat = v * c2
    theta -= step * m / (np.sqrt(v * c2) + dt(eps))

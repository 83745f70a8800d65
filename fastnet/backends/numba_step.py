"""One whole SGD training step compiled by Numba: the fused step of :mod:`fastnet.engine`.

The per-op path (``network.forward_train`` + ``backward`` + ``optim.sgd_step``) calls ~5
checked ops per layer from Python; on the small layers of the assignment's networks each call
costs more than its arithmetic. Here one call does a whole step -- forward (eqs 12-19 or
1-4), running averages (38-39), backward (21-37) and the update -- on buffers allocated once,
reusing the per-op kernels of :mod:`fastnet.backends.numba_ops`, so it computes what the
reference computes (tests/test_engine.py holds it to the per-op path) with Python out of the
inner loop. Matrix products go to BLAS through ``np.dot(a, b, out)``.

Layout, for a k-layer network (hidden layers 0..k-2 here, 0-based; the output layer k-1):

* ``W1t`` (d, m_1): the first layer's weights *transposed*, C-contiguous -- the orientation in
  which BLAS is fastest for the two (100 x 3072 x 50) products of the step (README,
  "Backends and benchmarks"); the network sees it as ``W1 = W1t.T``.
* ``Ws[l]`` (m_{l+2}, m_{l+1}): the weights of layers 2..k as in the assignment.
* ``bs[l]`` (m_{l+1},): biases of layers 1..k; unused (zeros) on batch-norm hidden layers.
* per hidden layer: ``gammas``, ``betas``, running ``mu_avs``, ``v_avs``; buffers ``Ss``
  (scores), ``Xs`` (outputs), ``S_hats``, ``mus``, ``vs``; per layer ``Gs`` (gradient of the
  scores) and ``dXs`` (gradient of a hidden layer's output).

The weight update folds the L2 term of eq (20) into a scale:
``W - eta (G^T X / n + 2 lam W) = (1 - 2 eta lam) W - (eta / n) G^T X``: the same step up to
the rounding of the last bit.
"""
from __future__ import annotations

import numpy as np

from .numba_ops import (
    _bias_relu_forward_kernel,
    _bn_relu_backward_kernel,
    _bn_relu_forward_train_kernel,
    _njit,
    _relu_backward_kernel,
    _softmax_xent_backward_kernel,
    _softmax_xent_kernel,
)


@_njit
def gather_rows(X, y, idx, Xb, yb):
    """Xb[i] = X[idx[i]], yb[i] = y[idx[i]]: the mini-batch, into reused buffers."""
    for i in range(idx.shape[0]):
        r = idx[i]
        Xb[i, :] = X[r, :]
        yb[i] = y[r]


@_njit
def _scaled_update(W, dW, keep, step):
    """W = keep * W - step * dW, element-wise over two arrays of one shape (C-contiguous)."""
    w = W.ravel()
    d = dW.ravel()
    for k in range(w.shape[0]):
        w[k] = keep * w[k] - step * d[k]


@_njit
def _ema(av, x, alpha, first):
    """Running average of eqs (38)-(39), av = alpha av + (1 - alpha) x; the first batch sets it."""
    if first:
        av[:] = x
    else:
        for j in range(av.shape[0]):
            av[j] = alpha * av[j] + (1 - alpha) * x[j]


@_njit
def sgd_step(Xb, yb, W1t, dW1t, Ws, dWs, bs, gammas, betas, mu_avs, v_avs,
             Ss, Xs, S_hats, mus, vs, Gs, dXs, dgammas, dbetas, P, loss,
             bn, first, eta, keep, step, eps, alpha):
    """One SGD step on the mini-batch (Xb, yb), in place; returns the mean cross-entropy.

    ``eta`` is the learning rate, ``keep`` = 1 - 2 eta lambda and ``step`` = eta / n, all three
    in the arrays' dtype (the caller casts them, so float32 networks update in float32).

    A non-finite loss is returned before anything is updated (as ``train.train_step`` does),
    so the network stays as it was when it produced it.
    """
    n = Xb.shape[0]
    k = len(Ss)  # layers
    # ---- forward: (12)-(17) with batch norm, (1)-(2) without; layer 1 from Xb
    np.dot(Xb, W1t, Ss[0])
    for l in range(k - 1):
        if bn:
            _bn_relu_forward_train_kernel(Ss[l], gammas[l], betas[l], eps, Xs[l], S_hats[l], mus[l], vs[l])
        else:
            _bias_relu_forward_kernel(Ss[l], bs[l], Xs[l])
        np.dot(Xs[l], Ws[l].T, Ss[l + 1])
    out = Ss[k - 1]
    b = bs[k - 1]
    for i in range(n):  # (18): the output layer's bias
        for j in range(out.shape[1]):
            out[i, j] += b[j]
    _softmax_xent_kernel(out, yb, P, loss)  # (19) and the cross-entropy
    total = 0.0
    for i in range(n):
        total += loss[i]
    mean_loss = total / n
    if not np.isfinite(mean_loss):
        return mean_loss
    if bn:  # (38)-(39)
        for l in range(k - 1):
            _ema(mu_avs[l], mus[l], alpha, first)
            _ema(v_avs[l], vs[l], alpha, first)
    # ---- backward and update, top down: (21)-(37)
    _softmax_xent_backward_kernel(P, yb, Gs[k - 1])  # (21)
    for l in range(k - 1, 0, -1):  # layer l + 1 (1-based) over hidden layer l
        G = Gs[l]
        W = Ws[l - 1]
        np.dot(G, W, dXs[l - 1])  # (23)/(29) with the weights before their update
        np.dot(G.T, Xs[l - 1], dWs[l - 1])  # G^T X, (22)/(28) times n
        _scaled_update(W, dWs[l - 1], keep, step)
        if l == k - 1 or not bn:  # bias: db = (1/n) G^T 1
            b = bs[l]
            for j in range(b.shape[0]):
                s = 0.0
                for i in range(n):
                    s += G[i, j]
                b[j] -= eta * (s / n)
        if bn:  # (24)-(27), (30)-(37) fused with the ReLU mask
            _bn_relu_backward_kernel(dXs[l - 1], Xs[l - 1], S_hats[l - 1], gammas[l - 1], vs[l - 1], eps,
                                     Gs[l - 1], dgammas[l - 1], dbetas[l - 1])
            g, bt, dg, db = gammas[l - 1], betas[l - 1], dgammas[l - 1], dbetas[l - 1]
            for j in range(g.shape[0]):
                g[j] -= eta * dg[j]
                bt[j] -= eta * db[j]
        else:
            _relu_backward_kernel(dXs[l - 1], Xs[l - 1], Gs[l - 1])  # (24)/(30)
    if not bn:
        b = bs[0]
        G = Gs[0]
        for j in range(b.shape[0]):
            s = 0.0
            for i in range(n):
                s += G[i, j]
            b[j] -= eta * (s / n)
    np.dot(Xb.T, Gs[0], dW1t)  # the first layer: X^T G, no input gradient
    _scaled_update(W1t, dW1t, keep, step)
    return mean_loss

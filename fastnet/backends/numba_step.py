"""One whole SGD training step compiled by Numba: the fused step of :mod:`fastnet.training.fused`.

The per-op path (``network.forward_train`` + ``backward`` + ``optim.sgd_step``) calls ~5
checked ops per layer from Python; on the small layers of the assignment's networks each call
costs more than its arithmetic. Here one call does a whole step -- forward (eqs 12-19 or
1-4), running averages (38-39), backward (21-37) and the update -- on buffers allocated once,
reusing the per-op kernels of :mod:`fastnet.backends.numba_ops`, so it computes what the
reference computes (tests/training/test_fused.py holds it to the per-op path) with Python out of the
inner loop. Matrix products go to NumPy's BLAS through :func:`fastnet.backends.blas.gemm`;
``BLAS`` here is :data:`fastnet.backends.blas.BLAS`, the table every step is called with
(None: no provider found, and no fused step).

Layout, for a k-layer network (hidden layers 0..k-2 here, 0-based; the output layer k-1):

* ``W1t`` (d, m_1): the first layer's weights *transposed*, C-contiguous -- the orientation in
  which BLAS is fastest for the two (100 x 3072 x 50) products of the step (README,
  "Backends and benchmarks"); the network sees it as ``W1 = W1t.T``.
* ``Ws[l]`` (m_{l+2}, m_{l+1}): the weights of layers 2..k as in the assignment.
* ``bs[l]`` (m_{l+1},): biases of layers 1..k; unused (zeros) on batch-norm hidden layers.
* per hidden layer: ``gammas``, ``betas``, running ``mu_avs``, ``v_avs``; buffers ``Ss``
  (scores), ``Xs`` (outputs), ``S_hats``, ``mus``, ``vs``; per layer ``Gs`` (gradient of the
  scores) and ``dXs`` (gradient of a hidden layer's output).

The weight update folds the L2 term of eq (20) into a scale and the whole update into the
weight-gradient product (GEMM's beta):
``W - eta (G^T X / n + 2 lam W) = (1 - 2 eta lam) W - (eta / n) G^T X``: the same step up to
the rounding of the last bit, with no gradient array and no extra pass over W.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from fastnet.backends.blas import BLAS, gemm
from fastnet.backends.numba_ops import (
    bias_relu_forward_kernel,
    bn_relu_backward_kernel,
    bn_relu_forward_train_kernel,
    fast_kernel,
    relu_backward_kernel,
    softmax_xent_backward_kernel,
    softmax_xent_kernel,
)
from fastnet.data.normalise import normalise_rows

__all__ = ["BLAS", "StepPlan", "parallel_threads", "start_cost", "fused_sgd_step", "fused_sgd_step_parallel", "gather_moved_rows", "gather_normalised_rows", "gather_rows",
           "sgd_step", "sgd_step_parallel", "step_core"]

# ------------------------------------------------------------------------- the batch


@fast_kernel(nogil=True)  # runs in a second thread while a step runs (FusedStep.prefetch)
def gather_rows(X, y, idx, Xb, yb):
    """Xb[i] = X[idx[i]], yb[i] = y[idx[i]]: the mini-batch, into reused buffers."""
    for i in range(idx.shape[0]):
        r = idx[i]
        Xb[i, :] = X[r, :]
        yb[i] = y[r]


@njit(cache=True, nogil=True)
def gather_normalised_rows(U, mean, inv_std, y, idx, Xb, yb):
    """The mini-batch of :func:`gather_rows` from uint8 images: Xb[i] = normalised U[idx[i]]."""
    normalise_rows(U, idx, mean, inv_std, Xb)
    for i in range(idx.shape[0]):
        yb[i] = y[idx[i]]


@njit(cache=True, nogil=True)
def _moved_row(X, mean, inv_std, normalise, r, move, H, W, out):
    """Row r of X (uint8 images normalised as normalise_rows does if ``normalise``) as an
    augmented image (data.augment.augment_moves): at (c, h, w) the source pixel
    (c, h + oy, w' + ox), w' = W - 1 - w if flipped else w; 0 outside."""
    oy, ox, flipped = move[0], move[1], move[2] != 0
    plane = H * W
    # the columns whose source column lies inside the image (clamped: a move off the image
    # leaves none): a straight or mirrored copy between zeros
    w0 = min(W, max(0, ox if flipped else -ox))
    w1 = max(w0, min(W, W + ox if flipped else W - ox))
    for c in range(out.shape[0] // plane):
        for h in range(H):
            at = c * plane + h * W
            sh = h + oy
            if sh < 0 or sh >= H:  # a row of the zero padding
                out[at:at + W] = 0
                continue
            out[at:at + w0] = 0
            out[at + w1:at + W] = 0
            src = c * plane + sh * W + (W - 1 + ox if flipped else ox)  # the source of w = 0
            step = -1 if flipped else 1
            if normalise:
                for w in range(w0, w1):
                    j = src + step * w
                    out[at + w] = (np.float64(X[r, j]) - mean[j]) * inv_std[j]
            else:
                for w in range(w0, w1):
                    out[at + w] = X[r, src + step * w]


@njit(cache=True, nogil=True)
def gather_moved_rows(X, mean, inv_std, normalise, y, idx, moves, H, W, Xb, yb):
    """The augmented mini-batch: Xb[i] = row idx[i] of X (uint8 images normalised as
    :func:`gather_normalised_rows` if ``normalise``) moved by ``moves[i]`` -- (oy, ox,
    flipped), data.augment.augment_moves -- as an H x W image; yb[i] = y[idx[i]]. Exactly
    data.augment.augment_batch of the rows with the same draws."""
    for i in range(idx.shape[0]):
        _moved_row(X, mean, inv_std, normalise, idx[i], moves[i], H, W, Xb[i])
        yb[i] = y[idx[i]]


# ----------------------------------------------------------------- the step on one core


@fast_kernel
def _ema(av, x, alpha, first):
    """Running average of eqs (38)-(39), av = alpha av + (1 - alpha) x; the first batch sets it."""
    if first:
        av[:] = x
    else:
        for j in range(av.shape[0]):
            av[j] = alpha * av[j] + (1 - alpha) * x[j]


@fast_kernel(nogil=True)
def sgd_step(blas, Xb, yb, W1t, Ws, bs, gammas, betas, mu_avs, v_avs,
             Ss, Xs, S_hats, mus, vs, Gs, dXs, dgammas, dbetas, P, loss,
             bn, first, eta, keep, step, eps, alpha):
    """One SGD step on the mini-batch (Xb, yb), in place; returns the mean cross-entropy.

    ``blas`` is :data:`BLAS`; ``eta`` is the learning rate, ``keep`` = 1 - 2 eta lambda and
    ``step`` = eta / n, all three in the arrays' dtype (the caller casts them, so float32
    networks update in float32).

    A non-finite loss is returned before anything is updated (as ``train.train_step`` does),
    so the network stays as it was when it produced it.
    """
    gemm(blas, Xb, False, W1t, False, Ss[0], 1.0, 0.0)  # (12): X W1^T, W1^T stored
    mean_loss = step_core(blas, yb, Ws, bs, gammas, betas, mu_avs, v_avs, Ss, Xs, S_hats, mus, vs, Gs, dXs,
                          dgammas, dbetas, P, loss, bn, first, eta, keep, step, eps, alpha)
    if np.isfinite(mean_loss):
        gemm(blas, Xb, True, Gs[0], False, W1t, -step, keep)  # the first layer: no input gradient
    return mean_loss


@fast_kernel(nogil=True)
def step_core(blas, yb, Ws, bs, gammas, betas, mu_avs, v_avs, Ss, Xs, S_hats, mus, vs, Gs, dXs,
              dgammas, dbetas, P, loss, bn, first, eta, keep, step, eps, alpha):
    """The step between the first layer's two products: from its scores ``Ss[0]`` to the
    gradient of those scores ``Gs[0]``, updating every other parameter (and the first layer's
    bias, if it has one); returns the mean cross-entropy (nothing updated if not finite).
    :func:`sgd_step` is this between the first layer's forward product and its update;
    ``FusedStep`` in two-core mode runs those two products in halves, one per core."""
    n = yb.shape[0]
    k = len(Ss)  # layers
    # ---- forward: (12)-(17) with batch norm, (1)-(2) without
    for l in range(k - 1):
        if bn:
            bn_relu_forward_train_kernel(Ss[l], gammas[l], betas[l], eps, Xs[l], S_hats[l], mus[l], vs[l])
        else:
            bias_relu_forward_kernel(Ss[l], bs[l], Xs[l])
        gemm(blas, Xs[l], False, Ws[l], True, Ss[l + 1], 1.0, 0.0)  # X W^T
    out = Ss[k - 1]
    b = bs[k - 1]
    for i in range(n):  # (18): the output layer's bias
        for j in range(out.shape[1]):
            out[i, j] += b[j]
    softmax_xent_kernel(out, yb, P, loss)  # (19) and the cross-entropy
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
    softmax_xent_backward_kernel(P, yb, Gs[k - 1])  # (21)
    for l in range(k - 1, 0, -1):  # layer l + 1 (1-based) over hidden layer l
        G = Gs[l]
        W = Ws[l - 1]
        gemm(blas, G, False, W, False, dXs[l - 1], 1.0, 0.0)  # (23)/(29), before W changes
        gemm(blas, G, True, Xs[l - 1], False, W, -step, keep)  # W = keep W - step G^T X: (22)/(28) + update
        if l == k - 1 or not bn:
            _bias_step(bs[l], G, eta)
        if bn:  # (24)-(27), (30)-(37) fused with the ReLU mask
            bn_relu_backward_kernel(dXs[l - 1], Xs[l - 1], S_hats[l - 1], gammas[l - 1], vs[l - 1], eps,
                                     Gs[l - 1], dgammas[l - 1], dbetas[l - 1])
            g, bt, dg, db = gammas[l - 1], betas[l - 1], dgammas[l - 1], dbetas[l - 1]
            for j in range(g.shape[0]):
                g[j] -= eta * dg[j]
                bt[j] -= eta * db[j]
        else:
            relu_backward_kernel(dXs[l - 1], Xs[l - 1], Gs[l - 1])  # (24)/(30)
    if not bn:
        _bias_step(bs[0], Gs[0], eta)
    return mean_loss


@fast_kernel
def _bias_step(b, G, eta):
    """b -= eta * db with db = (1/n) G^T 1, eqs (22)/(28); the column sums in float64."""
    n = G.shape[0]
    for j in range(b.shape[0]):
        s = 0.0
        for i in range(n):
            s += G[i, j]
        b[j] -= eta * (s / n)


# ------------------------------------------------------------------- the step on two cores
# With two cores, OpenBLAS's own threads make the step's two big products ~1.5x faster, but
# the gather of the next batch (~130 us for 100 uint8 rows) and the small layers stay serial
# between them. sgd_step_parallel splits the step over Numba's threads (BLAS on one thread
# in each) instead: the first layer's two products in halves, one per core, and the small
# layers on one core while the other gathers the next batch -- in blocks that either core
# takes once it is free, so the two finish together whatever the network. Measured side by
# side (scripts/bench_peers.py, README): a 3-layer BN epoch on uint8 images ~0.30 s with
# OpenBLAS's two threads, ~0.25 s like this.

_GATHER_BLOCK = 4  # rows a thread claims at a time
_NO_MOVES = np.zeros((0, 3), np.int64)  # a gather without augmentation


@intrinsic
def _fetch_add(typingctx, counter, amount):
    """counter[0] += amount, atomically (counter: a C-contiguous int64 array); returns the
    value before."""
    sig = types.int64(counter, types.int64)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", ary.data, args[1], "seq_cst")

    return sig, codegen


@fast_kernel(nogil=True)
def _gather_share(X, mean, inv_std, normalise, y, idx, moves, H, W, Xb, yb, counter):
    """Gather the batch ``idx`` into (Xb, yb) -- by gather_moved_rows if ``moves`` has rows,
    else gather_normalised_rows if ``normalise``, else gather_rows -- a block of rows at a
    time, claiming each from ``counter`` (start 0): every thread that calls it takes a share,
    until no row is left."""
    n = idx.shape[0]
    while True:
        i0 = _fetch_add(counter, _GATHER_BLOCK)
        if i0 >= n:
            return
        i1 = min(i0 + _GATHER_BLOCK, n)
        if moves.shape[0]:
            gather_moved_rows(X, mean, inv_std, normalise, y, idx[i0:i1], moves[i0:i1], H, W, Xb[i0:i1], yb[i0:i1])
        elif normalise:
            gather_normalised_rows(X, mean, inv_std, y, idx[i0:i1], Xb[i0:i1], yb[i0:i1])
        else:
            gather_rows(X, y, idx[i0:i1], Xb[i0:i1], yb[i0:i1])


@fast_kernel(nogil=True, parallel=True)
def sgd_step_parallel(blas, parts, Xb, yb, W1t, Ws, bs, gammas, betas, mu_avs, v_avs,
                      Ss, Xs, S_hats, mus, vs, Gs, dXs, dgammas, dbetas, P, loss,
                      bn, first, eta, keep, step, eps, alpha,
                      X, mean, inv_std, normalise, y, next_idx, next_moves, H, W, Xn, yn, counter, result):
    """:func:`sgd_step` on ``parts`` threads, gathering the next batch ``next_idx`` of X (as
    :func:`_gather_share`, moved by ``next_moves`` if it has rows; none if empty) into (Xn, yn)
    meanwhile. BLAS must run on one
    thread: each thread calls it. ``counter`` (int64) and ``result`` (float64) are 1-element
    scratch arrays. Returns the mean cross-entropy; a non-finite one updates nothing.

    The products are cut where no sum is: the forward one by rows of the batch, the update
    by rows of W1t, so each entry is one BLAS dot product as in :func:`sgd_step`.
    """
    n, d = Xb.shape
    S0 = Ss[0]
    for p in prange(parts):  # (12): X W1^T by blocks of the batch's rows
        gemm(blas, Xb[n * p // parts:n * (p + 1) // parts], False, W1t, False,
             S0[n * p // parts:n * (p + 1) // parts], 1.0, 0.0)
    counter[0] = 0
    for p in prange(parts):  # the small layers on one core; the next batch on all the others
        if p == 0:
            result[0] = step_core(blas, yb, Ws, bs, gammas, betas, mu_avs, v_avs, Ss, Xs, S_hats, mus, vs, Gs, dXs,
                                  dgammas, dbetas, P, loss, bn, first, eta, keep, step, eps, alpha)
        _gather_share(X, mean, inv_std, normalise, y, next_idx, next_moves, H, W, Xn, yn, counter)
    if np.isfinite(result[0]):
        G0 = Gs[0]
        for p in prange(parts):  # the update of W1t by blocks of its rows: no input gradient
            c0, c1 = d * p // parts, d * (p + 1) // parts
            gemm(blas, Xb[:, c0:c1], True, G0, False, W1t[c0:c1], -step, keep)
    return result[0]


# ------------------------------------------------------------ the interface FusedStep calls
# The extension's fused step (fastnet.backends.cython_step) offers the same three names.


def StepPlan(blas, *arrays):
    """The step's arrays -- sgd_step's arguments from ``W1t`` to ``bn`` -- with the provider's
    table and the two-core step's scratch, as the two calls below take them."""
    return blas, arrays, np.zeros(1, np.int64), np.zeros(1, np.float64)


def fused_sgd_step(plan, Xb, yb, first, eta, keep, step, eps, alpha):
    """:func:`sgd_step` on the plan's arrays."""
    blas, arrays, _, _ = plan
    return sgd_step(blas, Xb, yb, *arrays, first, eta, keep, step, eps, alpha)


def fused_sgd_step_parallel(plan, parts, Xb, yb, first, eta, keep, step, eps, alpha,
                            X, mean, inv_std, normalise, y, next_idx, Xn, yn, threads=0,
                            next_moves=None, height=0, width=0):
    """:func:`sgd_step_parallel` on the plan's arrays and scratch, cut in ``parts`` on
    ``threads`` of Numba's threads (0: one per part). Two parts on one thread run one after
    the other: the same products, so the same bits as on two threads. ``next_moves``: the next
    batch's rows moved as :func:`gather_moved_rows` moves them, as ``height`` x ``width`` images."""
    import numba

    blas, arrays, counter, result = plan
    before = numba.get_num_threads()
    threads = threads or parts
    if threads != before:
        numba.set_num_threads(threads)
    try:
        return sgd_step_parallel(blas, parts, Xb, yb, *arrays, first, eta, keep, step, eps, alpha,
                                 X, mean, inv_std, normalise, y, next_idx, _NO_MOVES if next_moves is None else next_moves,
                                 height, width, Xn, yn, counter, result)
    finally:
        if threads != before:
            numba.set_num_threads(before)


def start_cost() -> str:
    """Whether a run starts at once or compiles first, in a sentence (``fastnet info``)."""
    from fastnet.backends import numba_ops
    from fastnet.backends.numba_cache import readiness

    ready, total = readiness([sgd_step, sgd_step_parallel, gather_rows, gather_normalised_rows, gather_moved_rows, *numba_ops.kernels()])
    if ready == total:
        return f"compiled for this CPU ({total} kernels in Numba's cache): runs start at once"
    return (f"{ready} of {total} kernels compiled for this CPU: the first run compiles the rest "
            "(tens of seconds, once; each new network depth compiles the step again)")


def parallel_threads() -> int:
    """The threads Numba's parallel loops (the two-core step) may use now."""
    import numba

    return numba.get_num_threads()

"""Population statistics of batch norm re-estimated with the model fixed (Exercise 4.1b, c).

Wu & Johnson, "Rethinking 'Batch' in BatchNorm" (2021): the exponential moving average of
eqs (38)-(39) mixes statistics of many *different* models (the weights move at every step),
and with alpha = 0.9 it remembers only the last ~10-50 mini-batches. **PreciseBN** instead
runs the network, frozen, in training mode over many mini-batches and aggregates their
statistics exactly:

    mu  = sum_b n_b mu_b / N
    v   = sum_b n_b (v_b + (mu_b - mu)^2) / N

for batches b of n_b rows (N in all) with batch means mu_b and biased variances v_b (eqs
13-14). The second line is the law of total variance: v is the biased variance of the N
values of every unit, pooled -- what one batch of N rows would give, while each batch is still
normalised by its own statistics on the way to the next layer, as in training. Sums are
accumulated in float64.

**Adaptive BN** is the same estimate made on the inputs the network is about to be tested on
(optionally with augmented copies of them), for when test inputs are shifted from the
training ones.

``precise_stats`` returns the statistics; ``install_stats`` writes them into the network's
``mu_av``/``v_av``; ``using_stats`` does so temporarily (the exponential averages come back
afterwards, so training and its checkpoints are untouched).
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from numpy.typing import NDArray

from fastnet.errors import ConfigError
from fastnet.model.network import Network, hidden_forward_train

Stats = list  # one (mu, v) per hidden layer, None for layers without batch norm


def precise_stats(net: Network, X: NDArray, batch: int, ops) -> Stats:
    """Population statistics of every BN layer over the rows of X, in mini-batches of
    ``batch`` rows run in training mode (see the module docstring); arrays of the network's
    dtype. A last batch of fewer than 2 rows is left out (it has no variance)."""
    if not net.bn:
        raise ConfigError("the network has no batch norm: there are no statistics to estimate")
    if batch < 2:
        raise ConfigError(f"batch-norm statistics need batches of at least 2 rows, got {batch}")
    n = X.shape[0]
    if n < 2:
        raise ConfigError(f"batch-norm statistics need at least 2 images, got {n}")
    sums = None
    total = 0
    batches = []
    for start in range(0, n, batch):
        Xb = X[start : start + batch]
        if Xb.shape[0] < 2:
            break
        caches = hidden_forward_train(net, np.ascontiguousarray(Xb), ops)
        nb = Xb.shape[0]
        stats = [(lc.mu.astype(np.float64), lc.v.astype(np.float64)) if lc.mu is not None else None for lc in caches]
        batches.append((nb, stats))
        if sums is None:
            sums = [np.zeros_like(s[0]) if s is not None else None for s in stats]
        for acc, s in zip(sums, stats):
            if s is not None:
                acc += nb * s[0]
        total += nb
    means = [acc / total if acc is not None else None for acc in sums]
    variances = [np.zeros_like(m) if m is not None else None for m in means]
    for nb, stats in batches:  # second pass: the spread of the batch means around the mean
        for var, mu, s in zip(variances, means, stats):
            if s is not None:
                var += nb * (s[1] + (s[0] - mu) ** 2)
    dtype = net.dtype
    return [(mu.astype(dtype), (var / total).astype(dtype)) if mu is not None else None for mu, var in zip(means, variances)]


def install_stats(net: Network, stats: Stats) -> None:
    """Make ``stats`` the network's population statistics (mu_av, v_av)."""
    for layer, s in zip(net.layers, stats):
        if s is not None:
            layer.mu_av, layer.v_av = s[0].copy(), s[1].copy()


@contextmanager
def using_stats(net: Network, stats: Stats):
    """Evaluate with ``stats`` inside the block; the previous statistics come back after it."""
    saved = [(layer.mu_av, layer.v_av) for layer in net.layers]
    try:
        install_stats(net, stats)
        yield net
    finally:
        for layer, (mu, v) in zip(net.layers, saved):
            layer.mu_av, layer.v_av = mu, v


def precise_sample(n: int, images: int, seed: int, t: int) -> NDArray:
    """Which training rows PreciseBN uses at update step t: ``images`` of the n, drawn without
    replacement in random order (so its batches mix classes as training batches do), from a
    generator seeded by (seed, t) -- the same rows whenever a run, resumed or not, gets there."""
    rng = np.random.default_rng([seed, 4, t])
    return rng.permutation(n)[: min(images, n)]


def precise_estimate(net: Network, X_train: NDArray, cfg, ops, t: int) -> Stats:
    """PreciseBN of a training run at update step t: ``cfg.precise_images`` training rows
    (:func:`precise_sample`) in batches of ``cfg.batch``, un-augmented (the population the
    statistics are for is that of test-time inputs)."""
    idx = precise_sample(X_train.shape[0], cfg.precise_images, cfg.seed, t)
    return precise_stats(net, X_train[idx], cfg.batch, ops)

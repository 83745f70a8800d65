"""Evaluation in chunks: the same figures as one whole-set pass, whatever the chunk size and
the layout of the weights (the fused training step holds W_1 as a transposed view)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fastnet.backends import load
from fastnet.model.network import (
    EVAL_CHUNK,
    evaluate,
    forward_eval,
    init_network,
    l2_penalty,
    predict,
)
from fastnet.training.stepper import train_step

OPS = load("numpy").ops


def trained(hidden=(20, 15), d=64, K=10, n=600, dtype=np.float64, seed=0):
    """A small network after a few steps (running statistics set), with its data."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, K, n)
    net = init_network(d, hidden, K, dtype=dtype, rng=np.random.default_rng(seed + 1))
    for t in range(5):
        train_step(net, X[t * 50 : (t + 1) * 50], y[t * 50 : (t + 1) * 50], 0.01, 0.05, OPS)
    return net, X, y


def whole_set(net, X, y, lam):
    """Loss, cost and accuracy from one forward pass over all rows."""
    S = forward_eval(net, X, OPS)
    loss = float(OPS.softmax_xent(S, y).loss.astype(np.float64).mean())
    penalty = lam * sum(float((L.W.astype(np.float64) ** 2).sum()) for L in net.layers)
    return loss, loss + penalty, float(np.mean(S.argmax(axis=1) == y))


@pytest.mark.parametrize("chunk", [1, 7, 100, 599, 600, EVAL_CHUNK, 10_000])
def test_chunks_give_the_whole_set_figures(chunk):
    net, X, y = trained()
    m = evaluate(net, X, y, 0.01, OPS, chunk=chunk)
    loss, cost, accuracy = whole_set(net, X, y, 0.01)
    assert m.accuracy == accuracy
    assert m.loss == pytest.approx(loss, rel=1e-13) and m.cost == pytest.approx(cost, rel=1e-13)
    np.testing.assert_array_equal(predict(net, X, OPS, chunk=chunk), forward_eval(net, X, OPS).argmax(axis=1))


def test_transposed_weights_give_identical_figures_and_are_copied_once():
    net, X, y = trained(dtype=np.float32)
    expected = evaluate(net, X, y, 0.01, OPS, chunk=50)
    expected_pred = predict(net, X, OPS, chunk=50)
    W1 = net.layers[0].W
    held = np.ascontiguousarray(W1.T)   # how the fused step holds W_1: (d, m_1), C order
    net.layers[0].W = held.T
    seen = []

    def linear_forward(X, W, b=None):
        seen.append(W.flags.c_contiguous)
        return OPS.linear_forward(X, W, b)

    ops = SimpleNamespace(**{name: getattr(OPS, name) for name in dir(OPS) if not name.startswith("_")})
    ops.linear_forward = linear_forward
    assert evaluate(net, X, y, 0.01, ops, chunk=50) == expected
    np.testing.assert_array_equal(predict(net, X, ops, chunk=50), expected_pred)
    assert seen and all(seen)   # the ops never had to copy a weight matrix per chunk
    assert net.layers[0].W.base is held   # the network itself is left as it was


def test_l2_penalty_is_float64_sum_of_squares_in_any_layout():
    net, _, _ = trained(dtype=np.float32)
    expected = 0.3 * sum(float(np.sum(L.W.astype(np.float64) ** 2)) for L in net.layers)
    assert l2_penalty(net, 0.3) == pytest.approx(expected, rel=1e-14)
    net.layers[0].W = np.asfortranarray(net.layers[0].W)
    assert l2_penalty(net, 0.3) == pytest.approx(expected, rel=1e-14)
    assert l2_penalty(net, 0.0) == 0.0


@pytest.mark.parametrize("chunk", [7, 64, EVAL_CHUNK])
def test_rows_give_the_figures_of_the_gathered_subset(chunk):
    net, X, y = trained(n=900, dtype=np.float32)
    for rows in (np.sort(np.random.default_rng(4).permutation(900)[:250]), np.array([899, 0, 5, 5]), np.arange(900, dtype=np.uint32)):
        assert evaluate(net, X, y, 0.01, OPS, chunk=chunk, rows=rows) == evaluate(net, X[rows], y[rows], 0.01, OPS, chunk=chunk)


@pytest.mark.parametrize("rows", [np.array([0, 900]), np.array([-1]), np.array([0.0, 1.0]), np.zeros((2, 2), int)])
def test_bad_rows_are_refused(rows):
    net, X, y = trained(n=900)
    with pytest.raises(IndexError, match="0..899"):
        evaluate(net, X, y, 0.01, OPS, rows=rows)


@pytest.mark.parametrize("threads", [2, 3, 64])
def test_threads_give_the_same_bits(threads):
    net, X, y = trained(n=1000, dtype=np.float32)
    rows = np.sort(np.random.default_rng(5).permutation(1000)[:333])
    for chunk in (37, 1000):
        assert evaluate(net, X, y, 0.01, OPS, chunk=chunk, threads=threads) == evaluate(net, X, y, 0.01, OPS, chunk=chunk)
        assert evaluate(net, X, y, 0.01, OPS, chunk=chunk, rows=rows, threads=threads) == evaluate(net, X[rows], y[rows], 0.01, OPS, chunk=chunk)

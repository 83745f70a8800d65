"""Each op on each backend at the assignment's shapes, float32.

Mini-batches of n = 100 rows; hidden widths m = 50, 30, 20, 10 (the 3- and 9-layer networks
of Exercises 2-3); the first layer's input width 3072 for the linear ops; K = 10 classes.
Groups are named by op and shape, so each group compares the backends on one problem.

The bonus ops of Exercise 4 (batch norm after the ReLU, Adam) are timed at the same shapes.

The ``bn_fused`` group times a batch-norm layer's forward and backward together at (100, 50),
the unit of work the fused kernels exist for; the target is >= 4x the reference for both
compiled backends.

Run: ``pytest bench/bench_ops.py --benchmark-only`` (or ``--benchmark-disable`` as a smoke test).
"""
from __future__ import annotations

import numpy as np
import pytest

from fastnet.backends import load

N = 100  # n_batch of the assignment
EPS = 1e-8  # fastnet.model.network.DEFAULT_EPS
DTYPE = np.float32
WIDTHS = (50, 30, 20, 10)
LINEAR = ((3072, 50), (50, 50), (50, 30), (20, 10), (10, 10))  # (m_in, m_out)
PARAMS = ((50, 3072), (50, 50), (50,))  # shapes of W1, a hidden W, a vector


def _arrays(seed: int, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(DTYPE) for s in shapes]


def _bn_inputs(m: int):
    S, G = _arrays(m, (N, m), (N, m))
    gamma = np.ones(m, DTYPE) + DTYPE(0.1) * _arrays(m + 1, (m,))[0]
    beta = DTYPE(0.1) * _arrays(m + 2, (m,))[0]
    return S, gamma, beta, G


@pytest.mark.parametrize("m_in, m_out", LINEAR)
def test_linear_forward(benchmark, measure, ops, m_in, m_out):
    benchmark.group = f"linear_forward n=100 {m_in}->{m_out}"
    X, W, b = _arrays(1, (N, m_in), (m_out, m_in), (m_out,))
    measure(ops.linear_forward, X, W, b)


@pytest.mark.parametrize("m_in, m_out", LINEAR)
def test_linear_backward(benchmark, measure, ops, m_in, m_out):
    benchmark.group = f"linear_backward n=100 {m_in}->{m_out}"
    G, X, W = _arrays(2, (N, m_out), (N, m_in), (m_out, m_in))
    measure(ops.linear_backward, G, X, W, 0.005, m_in != 3072)


@pytest.mark.parametrize("m", WIDTHS)
def test_bias_relu_forward(benchmark, measure, ops, m):
    benchmark.group = f"bias_relu_forward n=100 m={m}"
    Z, b = _arrays(3, (N, m), (m,))
    measure(ops.bias_relu_forward, Z, b)


@pytest.mark.parametrize("m", WIDTHS)
def test_relu_backward(benchmark, measure, ops, m):
    benchmark.group = f"relu_backward n=100 m={m}"
    G, X = _arrays(4, (N, m), (N, m))
    measure(ops.relu_backward, G, np.maximum(X, 0))


@pytest.mark.parametrize("m", WIDTHS)
def test_bn_relu_forward_train(benchmark, measure, ops, m):
    benchmark.group = f"bn_relu_forward_train n=100 m={m}"
    S, gamma, beta, _ = _bn_inputs(m)
    measure(ops.bn_relu_forward_train, S, gamma, beta, EPS)


@pytest.mark.parametrize("m", WIDTHS)
def test_bn_relu_forward_eval(benchmark, measure, ops, m):
    benchmark.group = f"bn_relu_forward_eval n=100 m={m}"
    S, gamma, beta, _ = _bn_inputs(m)
    mu, v = S.mean(0), S.var(0)
    measure(ops.bn_relu_forward_eval, S, gamma, beta, mu, v, EPS)


@pytest.mark.parametrize("m", WIDTHS)
def test_bn_relu_backward(benchmark, measure, ops, m):
    benchmark.group = f"bn_relu_backward n=100 m={m}"
    S, gamma, beta, G = _bn_inputs(m)
    f = load("numpy").ops.bn_relu_forward_train(S, gamma, beta, EPS)
    measure(ops.bn_relu_backward, G, f.X, f.S_hat, gamma, f.v, EPS)


def test_bn_fused_forward_backward(benchmark, measure, ops):
    """One BN layer's forward (train) and backward at (100, 50) float32: target >= 4x."""
    benchmark.group = "bn_fused fwd+bwd n=100 m=50"
    S, gamma, beta, G = _bn_inputs(50)

    def forward_backward():
        f = ops.bn_relu_forward_train(S, gamma, beta, EPS)
        return ops.bn_relu_backward(G, f.X, f.S_hat, gamma, f.v, EPS)

    measure(forward_backward)


def test_softmax_xent(benchmark, measure, ops):
    benchmark.group = "softmax_xent n=100 K=10"
    (S,) = _arrays(5, (N, 10))
    y = np.random.default_rng(5).integers(0, 10, N)
    measure(ops.softmax_xent, S, y)


def test_softmax_xent_backward(benchmark, measure, ops):
    benchmark.group = "softmax_xent_backward n=100 K=10"
    (S,) = _arrays(6, (N, 10))
    y = np.random.default_rng(6).integers(0, 10, N)
    P = load("numpy").ops.softmax_xent(S, y).P
    measure(ops.softmax_xent_backward, P, y)


@pytest.mark.parametrize("shape", PARAMS, ids=lambda s: "x".join(map(str, s)))
def test_sgd_update_inplace(benchmark, measure, ops, shape):
    benchmark.group = f"sgd_update_inplace {'x'.join(map(str, shape))}"
    theta, grad = _arrays(7, shape, shape)
    # eta = 0: the parameter stays finite however many rounds the timer runs.
    measure(ops.sgd_update_inplace, theta, grad, 0.0)


# ------------------------------------------------------------- bonus ops (Exercise 4)


@pytest.mark.parametrize("m", WIDTHS)
def test_bn_forward_train(benchmark, measure, ops, m):
    benchmark.group = f"bn_forward_train n=100 m={m}"
    S, gamma, beta, _ = _bn_inputs(m)
    measure(ops.bn_forward_train, np.maximum(S, 0), gamma, beta, EPS)  # BN after the ReLU


@pytest.mark.parametrize("m", WIDTHS)
def test_bn_backward(benchmark, measure, ops, m):
    benchmark.group = f"bn_backward n=100 m={m}"
    S, gamma, beta, G = _bn_inputs(m)
    f = load("numpy").ops.bn_forward_train(np.maximum(S, 0), gamma, beta, EPS)
    measure(ops.bn_backward, G, f.S_hat, gamma, f.v, EPS)


def test_bn_forward_eval(benchmark, measure, ops):
    benchmark.group = "bn_forward_eval n=100 m=50"
    S, gamma, beta, _ = _bn_inputs(50)
    S = np.maximum(S, 0)
    measure(ops.bn_forward_eval, S, gamma, beta, S.mean(0), S.var(0), EPS)


@pytest.mark.parametrize("shape", PARAMS, ids=lambda s: "x".join(map(str, s)))
def test_adam_update_inplace(benchmark, measure, ops, shape):
    benchmark.group = f"adam_update_inplace {'x'.join(map(str, shape))}"
    theta, grad = _arrays(8, shape, shape)
    m, v = np.zeros_like(theta), np.ones_like(theta)
    # eta = 0: theta stays put however many rounds run (m and v still do all their work).
    measure(ops.adam_update_inplace, theta, grad, m, v, 0.0, 0.9, 0.999, 1e-8, 10)

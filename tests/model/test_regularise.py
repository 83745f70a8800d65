"""The regularisers for long runs (issue 17) as maths: soft targets, MixUp, dropout masks and
their way through the network, decoupled weight decay; nothing of them at test time."""
from __future__ import annotations

import numpy as np
import pytest

from fastnet.backends import resolve
from fastnet.model.network import (
    backward,
    evaluate,
    forward_eval,
    forward_train,
    init_network,
)
from fastnet.model.optim import Adam, decays_apart, decoupled_decay
from fastnet.model.regularise import (
    dropout_masks,
    mixup,
    mixup_draw,
    one_hot,
    smoothed_targets,
)

OPS = resolve("numpy").ops


def net_and_batch(bn=True, hidden=(12, 9), dtype=np.float64, n=16, d=8, K=5, seed=0):
    rng = np.random.default_rng(seed)
    net = init_network(d, hidden, K, bn=bn, dtype=dtype, rng=rng)
    return net, rng.standard_normal((n, d)).astype(dtype), rng.integers(0, K, n)


# ---------------------------------------------------------------------------- targets


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_smoothed_targets_are_distributions_with_the_label_on_top(dtype):
    y = np.array([0, 3, 1, 3])
    T = smoothed_targets(y, 4, 0.1, dtype)
    assert T.dtype == dtype and T.shape == (4, 4)
    want = 0.9 * one_hot(y, 4, np.float64) + 0.1 / 4
    rtol = 1e-6 if dtype == np.float32 else 1e-15  # a few roundings of the unit roundoff
    np.testing.assert_allclose(T, want, rtol=rtol)
    np.testing.assert_allclose(T.sum(axis=1), 1, rtol=rtol)
    np.testing.assert_array_equal(smoothed_targets(y, 4, 0.0, dtype), one_hot(y, 4, dtype))  # eps 0: one-hot exactly


def test_soft_loss_of_one_hot_targets_is_the_hard_loss_bit_for_bit():
    net, X, y = net_and_batch()
    hard = forward_train(net, X, y, OPS)
    soft = forward_train(net, X, one_hot(y, 5, np.float64), OPS)
    np.testing.assert_array_equal(soft.loss, hard.loss)
    np.testing.assert_array_equal(soft.P, hard.P)
    g_hard = backward(net, hard, y, 0.1, OPS)
    g_soft = backward(net, soft, one_hot(y, 5, np.float64), 0.1, OPS)
    assert all(np.array_equal(g_hard[k], g_soft[k]) for k in g_hard)


def test_soft_loss_is_the_cross_entropy_against_the_targets():
    rng = np.random.default_rng(1)
    S = 3 * rng.standard_normal((6, 4))
    T = rng.dirichlet(np.ones(4), size=6)
    P, loss = OPS.softmax_xent_soft(S, T)
    np.testing.assert_allclose(loss, -(T * np.log(P)).sum(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(OPS.softmax_xent_soft_backward(P, T), P - T)
    # huge logits: p underflows to 0 where a target is positive, and the loss stays finite
    big = np.array([[1e4, -1e4, 0.0]])
    _, loss = OPS.softmax_xent_soft(big, np.full((1, 3), 1 / 3))
    assert np.isfinite(loss).all() and loss[0] == pytest.approx(2e4 / 3 + 1e4 / 3, rel=1e-12)


def test_mixup_mixes_inputs_and_targets_alike():
    rng = np.random.default_rng(2)
    X, T = rng.standard_normal((5, 3)), smoothed_targets(np.arange(5) % 4, 4, 0.1, np.float64)
    perm = np.array([4, 0, 1, 2, 3])
    Xm, Tm = mixup(X, T, 0.3, perm)
    np.testing.assert_allclose(Xm, 0.3 * X + 0.7 * X[perm])
    np.testing.assert_allclose(Tm, 0.3 * T + 0.7 * T[perm])
    np.testing.assert_allclose(Tm.sum(axis=1), 1)
    Xs, Ts = mixup(X, T, 1.0, perm)
    np.testing.assert_array_equal(Xs, X)
    np.testing.assert_array_equal(Ts, T)


def test_mixup_lambda_follows_beta_alpha_alpha():
    lams = np.array([mixup_draw(np.random.default_rng([0, t]), 10, 0.2)[0] for t in range(2000)])
    assert ((lams >= 0) & (lams <= 1)).all()
    assert np.mean((lams < 0.1) | (lams > 0.9)) > 0.5  # alpha 0.2: mostly near 0 or 1 (U-shaped)
    assert np.mean(lams) == pytest.approx(0.5, abs=0.03)
    big = np.array([mixup_draw(np.random.default_rng([1, t]), 10, 100.0)[0] for t in range(500)])
    assert np.abs(big - 0.5).max() < 0.15  # large alpha: lambda near 1/2
    tiny = np.array([mixup_draw(np.random.default_rng([2, t]), 10, 1e-3)[0] for t in range(500)])
    assert np.mean((tiny < 1e-3) | (tiny > 1 - 1e-3)) > 0.95  # alpha -> 0: no mixing at all


# ---------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_masks_are_zero_or_the_inverse_keep_probability(dtype):
    masks = dropout_masks(np.random.default_rng(3), 200, (50, 30), 0.25, dtype)
    assert [m.shape for m in masks] == [(200, 50), (200, 30)] and all(m.dtype == dtype for m in masks)
    for m in masks:
        assert set(np.unique(m)) == {dtype(0), dtype(1 / 0.75)}
        assert np.mean(m == 0) == pytest.approx(0.25, abs=0.03)
        assert m.mean() == pytest.approx(1.0, abs=0.05)  # inverted: the expectation of x is kept


def test_dropout_multiplies_each_hidden_output_and_its_gradient():
    net, X, y = net_and_batch(bn=False)
    masks = dropout_masks(np.random.default_rng(4), len(y), net.hidden, 0.5, np.float64)
    plain, dropped = forward_train(net, X, y, OPS), forward_train(net, X, y, OPS, dropout=masks)
    np.testing.assert_array_equal(dropped.hidden[0].X, plain.hidden[0].X)  # layer 1 sees the same input
    np.testing.assert_array_equal(dropped.hidden[0].X_D, plain.hidden[0].X * masks[0])
    assert (dropped.hidden[0].X_D[masks[0] == 0] == 0).all()
    # a dropped unit of the last hidden layer receives no gradient: W of layer k sees zeros there
    g = backward(net, dropped, y, 0.0, OPS)
    X2 = dropped.hidden[-1].X_D
    np.testing.assert_allclose(g["W3"], (dropped.P - one_hot(y, 5, np.float64)).T @ X2 / len(y))


def test_test_time_has_no_dropout():
    """forward_eval and evaluate take no masks: a network trained with dropout is evaluated as is."""
    net, X, y = net_and_batch()
    from fastnet.model.network import update_running_stats

    update_running_stats(net, forward_train(net, X, y, OPS, dropout=dropout_masks(np.random.default_rng(5), len(y), net.hidden, 0.5, np.float64)))
    S1, S2 = forward_eval(net, X, OPS), forward_eval(net, X, OPS)
    np.testing.assert_array_equal(S1, S2)
    assert evaluate(net, X, y, 0.0, OPS) == evaluate(net, X, y, 0.0, OPS)


# ------------------------------------------------------------------- decoupled decay


def test_decoupled_decay_only_apart_from_an_optimiser_with_moments():
    assert decays_apart("decoupled", "adam") and not decays_apart("decoupled", "sgd")
    assert not decays_apart("l2", "adam") and not decays_apart("l2", "sgd")


def test_decoupled_decay_is_adamw():
    """W <- W - eta (adam_update(g) + 2 lam W), with g the gradient *without* the L2 term and
    the W of before the step; biases, gamma and beta are not decayed."""
    from fastnet.training.stepper import train_step

    net, X, y = net_and_batch()
    eta, lam = 1e-3, 0.05
    before = {k: a.copy() for k, a in net.params().items()}
    g = backward(net, forward_train(net, X, y, OPS), y, 0.0, OPS)
    shadow = Adam(before)  # the update Adam makes of g, on a copy
    ref_params = {k: a.copy() for k, a in before.items()}
    shadow.step(ref_params, g, eta, 0, OPS)
    train_step(net, X, y, lam, eta, OPS, optimizer=Adam(net.params()), t=0, decoupled=True)
    for k, a in net.params().items():
        update = ref_params[k] - before[k]  # -eta adam_update(g)
        want = before[k] + update - (2 * eta * lam * before[k] if k.startswith("W") else 0)
        np.testing.assert_allclose(a, want, rtol=1e-12, atol=1e-15, err_msg=k)
    W = np.ones((2, 3), np.float32)
    decoupled_decay([W], 0.1, 0.5)
    np.testing.assert_array_equal(W, np.float32(0.9))

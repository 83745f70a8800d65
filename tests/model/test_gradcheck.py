"""The reference backward pass against centred finite differences, in float64.

The assignment's checks: 2-, 3- and 4-layer networks on reduced inputs (d = 10, small layers,
batch 16 > 1), with and without batch norm, lambda = 0 and lambda > 0. The bound 1e-6 on the
error relative to each array's largest gradient entry is the issue's; measured errors are ~1e-9
(see fastnet/gradcheck.py for the step size and why per-entry errors are bounded more loosely).
"""
import numpy as np
import pytest

from fastnet.backends import resolve
from fastnet.model import gradcheck as gc
from fastnet.model.network import init_network

OPS = resolve("numpy").ops


@pytest.mark.parametrize("case", gc.STANDARD_CASES, ids=lambda c: gc.case_name(**c))
def test_gradients_match_finite_differences(case):
    checks = gc.run_case(case["hidden"], case["bn"], case["lam"], OPS)
    names = {c.name for c in checks}
    k = len(case["hidden"]) + 1
    expected = {f"W{l}" for l in range(1, k + 1)} | {f"b{k}"}
    expected |= {f"gamma{l}" for l in range(1, k)} | {f"beta{l}" for l in range(1, k)} if case["bn"] else {f"b{l}" for l in range(1, k)}
    assert names == expected  # every parameter is checked
    for c in checks:
        assert c.checked > 0
        assert c.rel_error <= 1e-6, f"{gc.case_name(**case)} {c.name}{c.worst_index}: {c.rel_error:.2e}"
        # Per entry (assignment's definition): rounding alone gives ~1e-6 on entries of ~1e-6.
        assert c.max_rel_error <= 1e-4, f"{gc.case_name(**case)} {c.name}{c.worst_index}: {c.max_rel_error:.2e}"


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    """The check can fail: a backward pass that drops the L2 term is caught."""
    import fastnet.model.gradcheck as mod

    real_backward = mod.backward

    def wrong(net, cache, y, lam, ops):
        grads = real_backward(net, cache, y, lam, ops)
        grads["W1"] = grads["W1"] - 2 * lam * net.layers[0].W
        return grads

    monkeypatch.setattr(mod, "backward", wrong)
    checks = gc.run_case([8], False, 0.1, OPS)
    assert {c.name: c.rel_error for c in checks}["W1"] > 1e-3


def test_gradcheck_refuses_float32():
    net = init_network(4, [3], 3, bn=False, dtype=np.float32, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="float64"):
        gc.check_gradients(net, np.zeros((4, 4), np.float32), np.zeros(4, int), 0.0, OPS)


@pytest.mark.parametrize("bn", [False, True], ids=["no BN", "BN"])
def test_input_gradient_matches_finite_differences(bn):
    """backward(..., dX0_out=) gives n dJ/dx^(0) (the ops' gradients are of the per-sample
    losses; lock-step needs it of layers 2..k fed by the first layer), by centred differences
    over every input entry (h and bound as above; entries whose perturbation flips a ReLU
    skipped); the parameter gradients are unchanged by it."""
    from fastnet.model.network import backward, batch_cost, forward_train

    rng = np.random.default_rng(3)
    net = init_network(10, [12, 9], 10, bn=bn, dtype=np.float64, rng=rng)
    X, y, lam = rng.standard_normal((16, 10)), rng.integers(0, 10, 16), 0.1
    dX0 = np.full_like(X, np.nan)
    grads = backward(net, forward_train(net, X, y, OPS), y, lam, OPS, dX0_out=dX0)
    plain = backward(net, forward_train(net, X, y, OPS), y, lam, OPS)
    assert grads.keys() == plain.keys() and all(np.array_equal(grads[k], plain[k]) for k in plain)
    masks = gc._masks(net, X, y, OPS)
    numeric, checked = np.zeros_like(X), np.zeros(X.shape, bool)
    for i in np.ndindex(X.shape):
        old = X[i]
        X[i] = old + gc.H
        j_plus, m_plus = batch_cost(net, X, y, lam, OPS), gc._masks(net, X, y, OPS)
        X[i] = old - gc.H
        j_minus, m_minus = batch_cost(net, X, y, lam, OPS), gc._masks(net, X, y, OPS)
        X[i] = old
        numeric[i] = (j_plus - j_minus) / (2 * gc.H)
        checked[i] = all((a == b).all() and (a == c).all() for a, b, c in zip(masks, m_plus, m_minus))
    assert checked.sum() > 0.9 * X.size
    error = np.abs(dX0 / len(y) - numeric)[checked].max() / np.abs(numeric).max()
    assert error <= 1e-6, f"dJ/dx0 relative error {error:.2e}"

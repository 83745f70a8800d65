"""The bonus ops beyond the shared equivalence and boundary tests: Adam against the textbook
rule over many steps, Adam's own refusals, batch norm without ReLU at constant columns, NaN.

(Every bonus op is also in ``OPS``, so ``test_ops_equivalence`` and ``test_boundary`` compare
it with the reference on random shapes in both dtypes and feed it bad input.)
"""
from __future__ import annotations

import numpy as np
import pytest
from test_ops_equivalence import (
    COMPILED,
    assert_matches_reference,
    compiled_module,
    copy_args,
    make_inputs,
    outputs,
)

from fastnet.backends import reference as ref
from fastnet.backends.checks import OpInputError

MODULES = ("reference",) + COMPILED


@pytest.fixture(params=MODULES)
def module(request):
    return ref if request.param == "reference" else compiled_module(request.param)


def textbook_adam(theta, grads, eta, b1, b2, eps):
    """Kingma & Ba's Algorithm 1 in float64, written out."""
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        theta = theta - eta * m_hat / (np.sqrt(v_hat) + eps)
    return theta, m, v


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_adam_follows_the_textbook_over_many_steps(module, dtype):
    rng = np.random.default_rng(0)
    theta0 = rng.standard_normal((7, 5))
    grads = [rng.standard_normal((7, 5)) * 10.0 ** rng.uniform(-3, 1) for _ in range(50)]
    want, want_m, want_v = textbook_adam(theta0, grads, 3e-3, 0.9, 0.999, 1e-8)
    theta, m, v = theta0.astype(dtype), np.zeros((7, 5), dtype), np.zeros((7, 5), dtype)
    alias = theta
    for t, g in enumerate(grads, start=1):
        assert module.adam_update_inplace(theta, g.astype(dtype), m, v, 3e-3, 0.9, 0.999, 1e-8, t) is None
    assert alias is theta
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(theta, want, **tol)
    np.testing.assert_allclose(m, want_m, **tol)
    np.testing.assert_allclose(v, want_v, rtol=tol["rtol"], atol=tol["atol"] * 1e-3)


def test_adam_first_step_moves_each_weight_by_eta():
    """With bias correction the first step is eta * g / (|g| + eps): eta in the sign of g."""
    theta = np.zeros(6)
    g = np.array([1e-4, -3.0, 2e3, -1e-2, 5.0, 7e-1])
    ref.adam_update_inplace(theta, g, np.zeros(6), np.zeros(6), 0.01, 0.9, 0.999, 1e-12, 1)
    np.testing.assert_allclose(theta, -0.01 * np.sign(g), rtol=1e-6)


@pytest.mark.parametrize("how", ["m is theta", "v is m", "read-only v", "t = 0", "t = 1.0", "beta1 = 1", "beta2 = 1.5", "eps = 0"])
def test_adam_refusals_are_alike(module, how):
    theta, grad, m, v, eta, b1, b2, eps, t = make_inputs("adam_update_inplace", 4, 3, np.float64, np.random.default_rng(1))
    args = dict(theta=theta, grad=grad, m=m, v=v, eta=eta, beta1=b1, beta2=b2, eps=eps, t=t)
    if how == "m is theta":
        args["m"] = theta
    elif how == "v is m":
        args["v"] = m
    elif how == "read-only v":
        v.flags.writeable = False
    else:
        name, value = how.split(" = ")
        args[name] = float(value) if "." in value or name != "t" else int(value)
    before = theta.copy()
    with pytest.raises(OpInputError) as want:
        ref.adam_update_inplace(**args)
    with pytest.raises(OpInputError) as got:
        module.adam_update_inplace(**args)
    assert str(got.value) == str(want.value) and str(got.value).startswith("adam_update_inplace: ")
    np.testing.assert_array_equal(theta, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_bn_without_relu_constant_columns(module, dtype):
    """Zero variance: S_hat = 0, X = beta exactly (no ReLU), and a finite backward pass."""
    rng = np.random.default_rng(4)
    S, gamma, beta, eps = make_inputs("bn_forward_train", 40, 6, dtype, rng)
    S[:, 1], S[:, 4] = 0.75, 0.0
    fwd = module.bn_forward_train(S, gamma, beta, eps)
    assert np.all(fwd.v[[1, 4]] == 0) and np.all(fwd.S_hat[:, [1, 4]] == 0)
    np.testing.assert_array_equal(fwd.X[:, 1], beta[1])
    if module is not ref:
        assert_matches_reference("bn_forward_train", module, (S, gamma, beta, eps), dtype)
    r = ref.bn_forward_train(S, gamma, beta, eps)
    G = rng.standard_normal((40, 6)).astype(dtype)
    assert np.isfinite(module.bn_backward(G, r.S_hat, gamma, r.v, eps).G).all()


def test_bn_without_relu_keeps_negative_values():
    S, gamma, beta, eps = make_inputs("bn_forward_train", 50, 8, np.float64, np.random.default_rng(2))
    out = ref.bn_forward_train(S, gamma, beta, eps)
    assert (out.X < 0).any()
    np.testing.assert_allclose(out.X, gamma * out.S_hat + beta)
    np.testing.assert_allclose(out.S_hat.mean(0), 0, atol=1e-12)
    # eval mode with the batch's own statistics is train mode
    np.testing.assert_allclose(ref.bn_forward_eval(S, gamma, beta, out.mu, out.v, eps), out.X, rtol=1e-12)


@pytest.mark.parametrize("op", ["bn_forward_train", "bn_forward_eval", "bn_backward"])
def test_nan_stays_visible_in_bonus_ops(op):
    for name in COMPILED:
        module = compiled_module(name)
        args = list(make_inputs(op, 6, 5, np.float64, np.random.default_rng(5)))
        args[0][2, 3] = np.nan
        want = outputs(op, args, getattr(ref, op)(*copy_args(tuple(args))))
        got = outputs(op, args, getattr(module, op)(*args))
        for key, a in want.items():
            np.testing.assert_array_equal(np.isnan(got[key]), np.isnan(a), err_msg=f"{name} {op}: {key}")

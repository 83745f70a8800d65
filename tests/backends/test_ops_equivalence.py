"""Every op of every compiled backend equals the NumPy reference, in float32 and float64.

One test body for all ops (JAX's ``lax_reference`` style): inputs come from one factory,
``make_inputs(op, n, m, dtype, rng)``, the op runs on the reference and on the backend, and
every output is compared to the tolerance of the one table below. Shapes are drawn by
hypothesis over the range the network uses (n 2..512 rows, m 1..3072 columns).

Smoke tests ("runs on every shape and dtype, returns what the contract says") are kept apart
from equivalence tests ("equals the reference"). Extra cases: logits of +-1e4, constant
columns (zero variance), NaN staying visible, in-place updates writing into the array itself,
and inputs never modified.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import COMPILED, compiled_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnet.backends import OPS
from fastnet.backends import reference as ref

DTYPES = (np.float32, np.float64)
EPS = 1e-8  # fastnet.model.network.DEFAULT_EPS: the eps the network actually passes

# ------------------------------------------------------------------------ tolerances
# One table; compare with np.testing.assert_allclose(actual, reference, rtol, atol).
#
# float64: the kernels sum columns of <= 512 rows in another order than NumPy (and with
#   FMA contraction); each result is a handful of roundings of 1.1e-16 times the reduction
#   length, so 1e-10 relative leaves four orders of magnitude of room and still catches
#   any wrong term (a wrong formula is off by O(1)).
# float32: unit roundoff 6e-8 times the reduction length (<= 512), amplified by
#   1/sqrt(v + eps) in batch norm; the reference itself sums in float32 while the kernels
#   sum in float64, so most of the difference is the reference's own error.
TOLERANCES = {
    np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12),
    np.dtype(np.float32): dict(rtol=2e-4, atol=2e-5),
}
# Loosened per op, each with its reason:
OP_TOLERANCES = {
    # S_hat = (S - mu) / sd: the reference's float32 column mean (a plain running sum over up
    # to 512 rows of values up to |3|) is off by ~1e-6, divided by sd down to 0.37: up to
    # ~1e-5 absolute in S_hat and X near 0, half the default atol. 1e-4 keeps a 10x margin.
    ("bn_relu_forward_train", np.dtype(np.float32)): dict(rtol=2e-4, atol=1e-4),
}
# bn_relu_backward's G is compared column-scaled, divided by |gamma| * (v + eps)^-1/2 (eqs 26,
# 31): G = gamma * sigma1 * (Gm - mean(Gm) - S_hat * mean(Gm * S_hat)) is that factor times a
# difference of O(|G|) terms, which can cancel to almost nothing (n = 2 makes it cancel
# exactly up to eps / v). Its rounding error is then absolute in those O(|G|) terms, times a
# factor that reaches 1e4 when a column's variance is below eps = 1e-8; comparing
# G / (|gamma| sigma1) states the tolerance where the error lives.
# ReLU masks (X > 0) are compared only where the float64 pre-activation is farther than this
# from 0: closer, either side is a correct rounding.
MASK_MARGIN = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-3}

# The arguments each ``_inplace`` op writes to, by name and position: they are outputs, and
# layout conversions (which copy) cannot apply to them.
INPLACE_ARGS = {"sgd_update_inplace": {"theta": 0}, "adam_update_inplace": {"theta": 0, "m": 2, "v": 3}}


def tol(op: str, dtype) -> dict:
    dtype = np.dtype(dtype)
    return OP_TOLERANCES.get((op, dtype), TOLERANCES[dtype])


# ---------------------------------------------------------------------------- backends


@pytest.fixture(params=COMPILED)
def backend(request):
    return compiled_module(request.param)


# ------------------------------------------------------------------------------ inputs


def _away_from_zero(rng, shape, lo=0.05, hi=3.0):
    """Values of random sign with lo <= |x| <= hi: ReLU inputs whose sign no rounding flips."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(lo, hi, size=shape)


def _bn_scores(rng, n, m):
    """BN scores with unit-scale columns around column means of a few units (float64)."""
    loc = rng.uniform(-3, 3, size=m)
    scale = np.exp(rng.uniform(-1, 1, size=m))
    return loc + scale * rng.standard_normal((n, m))


def make_inputs(op: str, n: int, m: int, dtype, rng: np.random.Generator) -> tuple:
    """Positional arguments for ``op`` on an (n, m) problem, arrays of ``dtype``.

    Values are drawn in float64 and cast, so float32 and float64 cases are the same numbers.
    m is the width of the op's main (n, m) array; linear ops also draw m_out in 1..64.
    """
    c = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
    if op == "linear_forward":
        m_out = int(rng.integers(1, 65))
        return c(rng.standard_normal((n, m))), c(rng.standard_normal((m_out, m)) / np.sqrt(m)), c(rng.standard_normal(m_out))
    if op == "linear_backward":
        m_out = int(rng.integers(1, 65))
        G, X, W = rng.standard_normal((n, m_out)), rng.standard_normal((n, m)), rng.standard_normal((m_out, m))
        return c(G), c(X), c(W), float(rng.uniform(0, 0.1)), bool(rng.integers(0, 2))
    if op == "bias_relu_forward":
        b = rng.uniform(-1, 1, size=m)
        Z = _away_from_zero(rng, (n, m)) - b  # Z + b is away from 0
        return c(Z), c(b)
    if op == "relu_backward":
        X = np.maximum(_away_from_zero(rng, (n, m)), 0)
        return c(rng.standard_normal((n, m))), c(X)
    if op == "bn_relu_forward_train":
        return c(_bn_scores(rng, n, m)), c(rng.uniform(0.2, 2, m)), c(rng.uniform(-1, 1, m)), EPS
    if op == "bn_relu_forward_eval":
        S = _bn_scores(rng, n, m)
        mu = S.mean(axis=0) + rng.normal(0, 0.1, m)  # running averages: near, not equal, to the batch's
        v = S.var(axis=0) * rng.uniform(0.8, 1.25, m)
        return c(S), c(rng.uniform(0.2, 2, m)), c(rng.uniform(-1, 1, m)), c(mu), c(v), EPS
    if op == "bn_relu_backward":
        S, gamma, beta, eps = make_inputs("bn_relu_forward_train", n, m, dtype, rng)
        fwd = ref.bn_relu_forward_train(S, gamma, beta, eps)
        return c(rng.standard_normal((n, m))), fwd.X, fwd.S_hat, gamma, fwd.v, eps
    if op == "softmax_xent":
        return c(3 * rng.standard_normal((n, m))), rng.integers(0, m, n)
    if op == "softmax_xent_backward":
        y = rng.integers(0, m, n)
        return ref.softmax_xent(c(3 * rng.standard_normal((n, m))), y).P, y
    if op == "sgd_update_inplace":
        return c(rng.standard_normal((n, m))), c(rng.standard_normal((n, m))), float(rng.uniform(0, 0.1))
    if op == "bn_forward_train":  # BN after the ReLU: its input is max(0, s), with zeros
        return c(np.maximum(_bn_scores(rng, n, m), 0)), c(rng.uniform(0.2, 2, m)), c(rng.uniform(-1, 1, m)), EPS
    if op == "bn_forward_eval":
        S = np.maximum(_bn_scores(rng, n, m), 0)
        mu = S.mean(axis=0) + rng.normal(0, 0.1, m)
        v = S.var(axis=0) * rng.uniform(0.8, 1.25, m) + 0.01
        return c(S), c(rng.uniform(0.2, 2, m)), c(rng.uniform(-1, 1, m)), c(mu), c(v), EPS
    if op == "bn_backward":
        S, gamma, beta, eps = make_inputs("bn_forward_train", n, m, dtype, rng)
        fwd = ref.bn_forward_train(S, gamma, beta, eps)
        return c(rng.standard_normal((n, m))), fwd.S_hat, gamma, fwd.v, eps
    if op == "adam_update_inplace":
        # moments as after some steps: m of either sign, v > 0 and not tiny (theta's change is
        # m / sqrt(v); near v = 0 it is eps-dominated and float32 rounding would be compared)
        theta, grad = rng.standard_normal((n, m)), rng.standard_normal((n, m))
        mom1, mom2 = 0.3 * rng.standard_normal((n, m)), rng.uniform(0.05, 2.0, (n, m))
        return (c(theta), c(grad), c(mom1), c(mom2), float(rng.uniform(0, 0.01)), float(rng.uniform(0.8, 0.95)),
                float(rng.uniform(0.99, 0.9999)), 1e-8, int(rng.integers(1, 10_000)))
    if op == "softmax_xent_soft":  # soft targets (issue 17): rows of T are distributions
        T = rng.dirichlet(np.full(m, 0.5), size=n)
        return c(3 * rng.standard_normal((n, m))), c(T)
    if op == "softmax_xent_soft_backward":
        S, T = make_inputs("softmax_xent_soft", n, m, dtype, rng)
        return ref.softmax_xent_soft(S, T).P, T
    raise KeyError(op)


def copy_args(args: tuple) -> tuple:
    return tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)


def outputs(op: str, args: tuple, result) -> dict:
    """What an op produced, by name: its return value's fields, or theta for in-place ops."""
    if op.endswith("_inplace"):
        return {name: args[i] for name, i in INPLACE_ARGS[op].items()}
    if isinstance(result, tuple):  # NamedTuple
        return dict(zip(result._fields, result))
    return {"out": result}


def column_scale(op: str, name: str, args: tuple) -> np.ndarray | None:
    """What an output is divided by before it is compared (see the tolerance table)."""
    if op == "bn_relu_backward" and name == "G":
        gamma, v, eps = (np.asarray(a, np.float64) for a in args[3:6])
        return np.maximum(np.abs(gamma), 1e-30) / np.sqrt(v + eps)
    if op == "bn_backward" and name == "G":  # the same reasoning, without the mask
        gamma, v, eps = (np.asarray(a, np.float64) for a in args[2:5])
        return np.maximum(np.abs(gamma), 1e-30) / np.sqrt(v + eps)
    return None


def pre_activation(op: str, args: tuple) -> np.ndarray | None:
    """The float64 value whose sign the op's ReLU mask is, for ops that apply a ReLU."""
    a = [np.asarray(x, np.float64) if isinstance(x, np.ndarray) else x for x in args]
    if op == "bias_relu_forward":
        return a[0] + a[1]
    if op == "bn_relu_forward_train":
        S, gamma, beta, eps = a
        return gamma * (S - S.mean(0)) / np.sqrt(S.var(0) + eps) + beta
    if op == "bn_relu_forward_eval":
        S, gamma, beta, mu, v, eps = a
        return gamma * (S - mu) / np.sqrt(v + eps) + beta
    return None


def assert_matches_reference(op: str, module, args: tuple, dtype) -> None:
    """Run op on the reference and the backend (each on its own copy) and compare."""
    ref_args, our_args = copy_args(args), copy_args(args)
    expected = outputs(op, ref_args, getattr(ref, op)(*ref_args))
    actual = outputs(op, our_args, getattr(module, op)(*our_args))
    assert actual.keys() == expected.keys()
    for name, want in expected.items():
        got = actual[name]
        if want is None:
            assert got is None, f"{op}: {name} should be None"
            continue
        assert got.dtype == want.dtype and got.shape == want.shape, f"{op}: {name} is {got.dtype}{got.shape}, expected {want.dtype}{want.shape}"
        scale = column_scale(op, name, args)
        if scale is not None:
            got, want = got / scale, want / scale
        np.testing.assert_allclose(got, want, **tol(op, dtype), err_msg=f"{op}: {name}")
    pre = pre_activation(op, args)
    if pre is not None:
        X = actual["X"] if "X" in actual else actual["out"]
        away = np.abs(pre) > MASK_MARGIN[np.dtype(dtype)]
        np.testing.assert_array_equal((X > 0)[away], (pre > 0)[away], err_msg=f"{op}: ReLU mask")


# ------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 512), m=st.integers(1, 3072), seed=st.integers(0, 2**32 - 1))
def test_op_matches_reference(backend, op, dtype, n, m, seed):
    args = make_inputs(op, n, m, dtype, np.random.default_rng(seed))
    assert_matches_reference(op, backend, args, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("n, m", [(2, 1), (100, 50), (100, 10), (3, 3072)])
def test_op_matches_reference_at_fixed_shapes(backend, op, dtype, n, m):
    """The edge (2 rows, 1 column), the assignment's shapes, and a first-layer width."""
    args = make_inputs(op, n, m, dtype, np.random.default_rng(n * 10007 + m))
    assert_matches_reference(op, backend, args, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
def test_inputs_are_not_modified(backend, op, dtype):
    args = make_inputs(op, 37, 23, dtype, np.random.default_rng(1))
    before = copy_args(args)
    getattr(backend, op)(*args)
    for i, (a, b) in enumerate(zip(args, before)):
        if i in INPLACE_ARGS.get(op, {}).values():
            continue
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=f"{op} modified its argument {i}")


# ---------------------------------------------------------------------------- smoke


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
def test_op_runs_and_keeps_dtype(backend, op, dtype):
    """Smoke: every op returns what the contract says, arrays of the input dtype."""
    args = make_inputs(op, 5, 4, dtype, np.random.default_rng(0))
    result = getattr(backend, op)(*args)
    if op.endswith("_inplace"):
        assert result is None
    for name, a in outputs(op, args, result).items():
        if a is not None:
            assert a.dtype == np.dtype(dtype) and a.flags.c_contiguous, (op, name)
            assert np.isfinite(a).all(), (op, name)


def test_backend_exports_every_op_with_the_reference_signature(backend):
    import inspect

    for op in OPS:
        assert hasattr(backend, op), f"{backend.__name__} lacks {op}"
        assert inspect.signature(getattr(backend, op)) == inspect.signature(getattr(ref, op)), op


# ------------------------------------------------------------------------- extra cases


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_softmax_xent_large_logits(backend, dtype):
    """Logits of +-1e4: max-shifted, so P and the loss are finite and equal the reference."""
    rng = np.random.default_rng(3)
    S = (rng.choice([-1e4, 1e4], size=(64, 10)) + rng.standard_normal((64, 10))).astype(dtype)
    y = rng.integers(0, 10, 64)
    got = backend.softmax_xent(S, y)
    assert np.isfinite(got.P).all() and np.isfinite(got.loss).all()
    assert_matches_reference("softmax_xent", backend, (S, y), dtype)
    # a wrong label at a 2e4 gap costs ~2e4, and the loss says so
    assert got.loss.max() > 1e4


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_batch_norm_constant_columns(backend, dtype):
    """Zero variance: S_hat = 0, X = max(beta, 0), and a finite backward pass (eps at work).

    The constants are dyadic (0.75, -3, 0) so that the reference's float32 column sums are
    exact too; otherwise its rounding of mu, amplified by eps^-1/2 = 1e4, would be compared.
    """
    rng = np.random.default_rng(4)
    S, gamma, beta, eps = make_inputs("bn_relu_forward_train", 40, 6, dtype, rng)
    S[:, 1], S[:, 3], S[:, 4] = 0.75, -3.0, 0.0
    fwd = backend.bn_relu_forward_train(S, gamma, beta, eps)
    assert np.all(fwd.v[[1, 3, 4]] == 0) and np.all(fwd.S_hat[:, [1, 3, 4]] == 0)
    np.testing.assert_array_equal(fwd.X[:, 1], np.maximum(beta[1], 0))
    assert_matches_reference("bn_relu_forward_train", backend, (S, gamma, beta, eps), dtype)
    r = ref.bn_relu_forward_train(S, gamma, beta, eps)
    G = rng.standard_normal((40, 6)).astype(dtype)
    bwd_args = (G, r.X, r.S_hat, gamma, r.v, eps)
    assert np.isfinite(backend.bn_relu_backward(*bwd_args).G).all()
    assert_matches_reference("bn_relu_backward", backend, bwd_args, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", ["bias_relu_forward", "relu_backward", "bn_relu_forward_train", "bn_relu_forward_eval", "bn_relu_backward", "softmax_xent"])
def test_nan_stays_visible(backend, op, dtype):
    """A NaN in the input comes out exactly where the reference puts it (no fast-math nnan)."""
    args = list(make_inputs(op, 6, 5, dtype, np.random.default_rng(5)))
    args[0][2, 3] = np.nan
    expected = outputs(op, args, getattr(ref, op)(*copy_args(tuple(args))))
    actual = outputs(op, args, getattr(backend, op)(*args))
    for name, want in expected.items():
        assert np.isnan(want).any() or name in ("dgamma", "dbeta", "v", "mu"), (op, name)  # the test bites
        np.testing.assert_array_equal(np.isnan(actual[name]), np.isnan(want), err_msg=f"{op}: {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(7, 5), (5,), (1, 1)])
def test_sgd_update_writes_into_theta_itself(backend, dtype, shape):
    rng = np.random.default_rng(6)
    theta = rng.standard_normal(shape).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    expected = theta - dtype(0.05) * grad
    alias = theta  # the caller's reference: it must see the update
    view = theta.reshape(-1)
    assert backend.sgd_update_inplace(theta, grad, 0.05) is None
    assert alias is theta and np.shares_memory(view, theta)
    np.testing.assert_allclose(alias, expected, **tol("sgd_update_inplace", dtype))
    np.testing.assert_allclose(view, expected.reshape(-1), **tol("sgd_update_inplace", dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_sgd_update_of_a_view_updates_its_base(backend, dtype):
    """A C-contiguous view (a row block of a larger parameter) is updated in its base."""
    base = np.zeros((6, 4), dtype)
    block = base[2:4]
    backend.sgd_update_inplace(block, np.ones((2, 4), dtype), 0.5)
    assert np.shares_memory(block, base)
    np.testing.assert_array_equal(base[2:4], -0.5)
    np.testing.assert_array_equal(base[[0, 1, 4, 5]], 0)


@pytest.mark.parametrize("op", ["bias_relu_forward", "relu_backward", "bn_relu_forward_train", "bn_relu_backward", "softmax_xent", "softmax_xent_backward"])
def test_outputs_are_fresh_arrays(backend, op):
    """Outputs never alias an input (the network keeps both alive)."""
    args = make_inputs(op, 9, 4, np.float64, np.random.default_rng(7))
    result = getattr(backend, op)(*args)
    for name, out in outputs(op, args, result).items():
        for a in args:
            if isinstance(a, np.ndarray) and out is not None:
                assert not np.shares_memory(out, a), (op, name)

"""The benchmark's peers compute what fastnet computes, so that comparing their speed is honest.

* PyTorch and JAX (each skipped with its reason when not installed): from the same initial
  parameters, one training step on the same batch, and five steps of a planned epoch (same
  permutation, same cyclic learning rates), give the same parameters and running averages as
  fastnet's NumPy reference.
* The matrix-multiply floor, in every memory orientation, computes exactly the products of a
  fastnet training step (the same shapes, the same numbers), and nothing else.

Tolerance (float32): the *change* of every parameter, theta - theta_0, is compared, since
comparing theta itself would hide a wrong gradient behind the much larger theta_0:
``|d_peer - d_fastnet| <= RTOL |d_fastnet| + ATOL max|d_fastnet|`` with RTOL = ATOL = 2e-4.
Reason: the implementations sum in different orders (BLAS blocking, fused BN kernels, XLA);
float32 roundoff (6e-8) over reductions of up to 300 terms here, amplified by 1/sqrt(v + eps)
in batch norm, gave at most 1.5e-5 in that measure over five steps (PyTorch 2.13, JAX 0.10.2),
so the bound has a 13x margin. A wrong term is far outside it: leaving the last layer's W out
of the L2 term gave 1.5e-3 (that bug was caught here). Running averages: rtol 1e-4 (measured
8e-6; PyTorch's unbiased running_var is converted back to the biased one first).
Everything runs on small inputs (d = 300) in a few seconds.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import peers  # noqa: E402

from fastnet.backends import load  # noqa: E402
from fastnet.training.stepper import train_step  # noqa: E402

D, N_TRAIN = 300, 1000
RTOL = ATOL = 2e-4
SPECS = [peers.Spec(hidden=h, bn=bn, d=D) for h in (peers.THREE, peers.NINE) for bn in (True, False)]
IDS = [f"{len(s.hidden) + 1}L-{'bn' if s.bn else 'nobn'}" for s in SPECS]


@pytest.fixture(autouse=True)
def _openmp_threads_restored():
    """PyTorch sets its threads (TorchImpl(threads=1), and at its import) through OpenMP's, for
    the whole process: put OpenMP's back, or the two-core tests that run after these would
    skip (one OpenMP thread)."""
    before = max([pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"], default=None)
    yield
    if before is not None:
        threadpool_limits(before, user_api="openmp")


@pytest.fixture(scope="module")
def data():
    return peers.make_data(N_TRAIN, D, seed=3)


def _fastnet_after(spec, init, X, y, plan):
    impl = peers.FastnetImpl(spec, "numpy")
    impl.reset(init)
    impl.epoch(X, y, plan)
    return impl.params()


def assert_same_update(got: dict, want: dict, init: dict):
    assert sorted(got) == sorted(want)
    for name in want:
        if name.startswith(("mu_av", "v_av")):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6, err_msg=name)
            continue
        d_want = want[name].astype(np.float64) - init[name]
        d_got = got[name].astype(np.float64) - init[name]
        assert np.abs(d_want).max() > 0, f"{name} did not change"
        np.testing.assert_allclose(d_got, d_want, rtol=RTOL, atol=ATOL * np.abs(d_want).max(), err_msg=name)


def _plan(spec, n_batches):
    # from step n_s: eta near eta_max = 0.1, so that the updates are large and a wrong
    # gradient cannot hide in float32 rounding of the parameters
    return peers.make_plan(spec, N_TRAIN, n_batches, seed=5, t0=spec.n_s)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("n_batches", [1, 5])
def test_torch_matches_fastnet(spec, n_batches, data):
    reason = peers.torch_available()
    if reason:
        pytest.skip(reason)
    X, y = data
    init = peers.initial_network(spec, seed=1)
    plan = _plan(spec, n_batches)
    want = _fastnet_after(spec, init, X, y, plan)
    torch_impl = peers.TorchImpl(spec, threads=1)  # tiny products: threads only add waits
    torch_impl.reset(init)
    if n_batches == 1:  # the single-step entry point the pytest benchmarks use
        idx = plan.idx(0)
        torch_impl.step(X[idx], y[idx], float(plan.etas[0]))
    else:
        torch_impl.epoch(X, y, plan)
    assert_same_update(torch_impl.params(), want, peers.fastnet_params(init))


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_torch_matches_fastnet_on_augmented_batches(backend):
    """bench_load --augment: PyTorch gets the images fastnet trains on -- augment_batch's copy
    beside fastnet's augmentation in the gather (cython) or between steps (numpy)."""
    reason = peers.torch_available() or (None if load(backend).available else load(backend).reason)
    if reason:
        pytest.skip(reason)
    spec = peers.Spec(augment=True)  # 3072 inputs: the rows are images
    X, y = peers.make_data(600, spec.d, seed=3)
    init = peers.initial_network(spec, seed=1)
    plan = peers.make_plan(spec, 600, 5, seed=5, t0=spec.n_s)
    impl = peers.FastnetImpl(spec, backend)
    impl.reset(init)
    impl.epoch(X, y, plan)
    plain = peers.FastnetImpl(peers.Spec(), backend)
    plain.reset(init)
    plain.epoch(X, y, plan)
    torch_impl = peers.TorchImpl(spec, threads=1)
    torch_impl.reset(init)
    torch_impl.epoch(X, y, plan)
    assert_same_update(torch_impl.params(), impl.params(), peers.fastnet_params(init))
    assert not np.allclose(plain.params()["W1"], impl.params()["W1"])  # the augmentation changed the run


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_jax_matches_fastnet(spec, data):
    reason = peers.jax_available()
    if reason:
        pytest.skip(reason)
    X, y = data
    init = peers.initial_network(spec, seed=1)
    plan = _plan(spec, 5)
    want = _fastnet_after(spec, init, X, y, plan)
    jax_impl = peers.JaxImpl(spec)
    jax_impl.reset(init)
    jax_impl.epoch(X, y, plan)
    assert_same_update(jax_impl.params(), want, peers.fastnet_params(init))


def test_fastnet_impl_is_train_step(data):
    """FastnetImpl.epoch is train_step on X[idx] with the plan's learning rates, nothing more."""
    X, y = data
    spec = SPECS[0]
    init = peers.initial_network(spec, seed=1)
    plan = _plan(spec, 3)
    ref = peers.initial_network(spec, seed=1)
    ops = load("numpy").ops
    for j in range(plan.n_batches):
        idx = plan.idx(j)
        train_step(ref, X[idx], y[idx], spec.lam, float(plan.etas[j]), ops)
    got = _fastnet_after(spec, init, X, y, plan)
    for name, a in peers.fastnet_params(ref).items():
        np.testing.assert_array_equal(got[name], a, err_msg=name)


def test_plan_is_a_permutation_with_the_cyclic_schedule():
    spec = peers.Spec(d=D)
    plan = peers.make_plan(spec, N_TRAIN)
    assert plan.n_batches == N_TRAIN // spec.batch
    assert sorted(plan.perm) == list(range(N_TRAIN))
    assert plan.etas[0] == spec.eta_min and np.all(np.diff(plan.etas) > 0)


# --------------------------------------------------------------------------------- floor


class _Recorder:
    """fastnet's ops, recording the products the linear ops compute."""

    def __init__(self, ops):
        self.ops, self.products = ops, []

    def __getattr__(self, name):
        return getattr(self.ops, name)

    def linear_forward(self, X, W, b=None):
        self.products.append((self.layer_of(W), "fwd", (X.shape[0], X.shape[1], W.shape[0])))
        return self.ops.linear_forward(X, W, b)

    def linear_backward(self, G, X, W, lam, need_dX=True):
        l = self.layer_of(W)
        self.products.append((l, "dW", (G.shape[1], G.shape[0], X.shape[1])))
        if need_dX:
            self.products.append((l, "dX", (G.shape[0], G.shape[1], W.shape[1])))
        return self.ops.linear_backward(G, X, W, lam, need_dX)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_floor_does_the_products_of_a_training_step(spec, data):
    X, y = data
    net = peers.initial_network(spec, seed=1)
    rec = _Recorder(load("numpy").ops)
    rec.layer_of = lambda W: next(l for l, layer in enumerate(net.layers, 1) if layer.W is W)
    train_step(net, X[:100], y[:100], spec.lam, 0.01, rec)
    assert sorted(rec.products) == sorted(peers.product_shapes(spec))


MIXED = {(l, w): peers.LAYOUTS[(l + i) % len(peers.LAYOUTS)]
         for l in range(1, 10) for i, w in enumerate(("fwd", "dW", "dX"))}


def _matmul(library: str):
    """The floor's ``mm``: NumPy's matmul, or a provider's cblas_sgemm (32-bit integers) through
    peers.cblas_matmul, skipped where that provider is not here."""
    if library == "numpy":
        return np.matmul
    from fastnet.backends import gemm_choice

    tab = gemm_choice.table(library)
    if tab is None or tab[2]:
        pytest.skip(f"no {library} with 32-bit CBLAS integers here")
    return peers.cblas_matmul(tab)


@pytest.mark.parametrize("library", ["numpy", "mkl", "openblas-avx512"])
@pytest.mark.parametrize("layout", [*peers.LAYOUTS, "mixed"])
@pytest.mark.parametrize("spec", SPECS[::2], ids=IDS[::2])
def test_floor_products_equal_fastnet_linear_ops(spec, layout, library, data):
    """In every orientation, on NumPy's BLAS and on another library's CBLAS (the MKL floor), the
    floor computes S = X W^T, G^T X and G W, as fastnet's ops do."""
    X, _ = data
    lay = layout if layout != "mixed" else {k: v for k, v in MIXED.items() if k[0] <= len(spec.hidden) + 1}
    floor = peers.FloorImpl(spec, lay, mm=_matmul(library))
    Xb = X[200:300]
    floor.step(Xb)
    ops = load("numpy").ops
    for l, (c, r) in enumerate(zip(floor.canon, floor.results()), start=1):
        Xin = Xb if l == 1 else c["X"]
        n = Xin.shape[0]
        S = ops.linear_forward(Xin, c["W"])
        g = ops.linear_backward(c["G"], Xin, c["W"], 0.0, need_dX=l > 1)
        tol = dict(rtol=1e-5, atol=1e-5 * np.sqrt(Xin.shape[1]))  # same float32 products, other blocking
        np.testing.assert_allclose(r["S"], S, **tol, err_msg=f"layer {l} forward")
        np.testing.assert_allclose(r["dW"], g.dW * n, **tol, err_msg=f"layer {l} weight gradient")
        if l > 1:
            np.testing.assert_allclose(r["dX"], g.dX, **tol, err_msg=f"layer {l} input gradient")
        else:
            assert r["dX"] is None

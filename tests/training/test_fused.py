"""The fused training step (fastnet.training.fused) against the op-by-op step it replaces.

Tolerances: in float64 the two paths differ only in the order of a few roundings (the
weight step is (1 - 2 eta lam) W - (eta/n) G^T X instead of W - eta (G^T X / n + 2 lam W),
and bias sums are taken in float64), so after 25 steps every array agrees to 1e-12 relative
to its largest entry. In float32 one step's roundings (~6e-8 relative) are amplified by the
following steps through the batch-norm divisions; 25 steps stay within 2e-5.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from fastnet.backends import load, resolve
from fastnet.model.network import init_network
from fastnet.training.config import TrainConfig
from fastnet.training.fused import FusedStep, fused_step_for
from fastnet.training.loop import fit
from fastnet.training.stepper import Stepper, train_step
from fastnet.util.threads import blas_thread_count

#: The backends with a compiled step: Numba's (JIT) and the extension's (ahead of time).
FUSED = [pytest.param(name, marks=pytest.mark.skipif(not load(name).available, reason=f"{name} unavailable: {load(name).reason}"))
         for name in ("numba", "cython")]
pytestmark = pytest.mark.parametrize("backend", FUSED)

D, K, N = 60, 10, 400


def _numba_compiles_this(backend, hidden, dtype) -> None:
    """Skip what would only make Numba compile its step once more: its step takes the layers as
    tuples, so every depth and dtype is a compilation of tens of seconds on a fresh cache, and
    the loops over layers are the same at any depth. Numba is checked on the 3-layer network in
    float64 (the tight tolerance); the extension's step, compiled at install and auto's choice,
    on every network and dtype."""
    if backend == "numba" and (len(hidden) > 2 or dtype != np.float64):
        pytest.skip("Numba's step is checked on the 3-layer network in float64 (a compilation per depth and dtype)")
NETS = {"3-layer": [20, 15], "9-layer": [20, 15, 12, 12, 8, 8, 8, 8]}


def _data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, D)).astype(dtype), rng.integers(0, K, N)


def _arrays(net):
    return {**net.params(), **net.running_stats()}


def _worst(a, b) -> float:
    A, B = _arrays(a), _arrays(b)
    assert A.keys() == B.keys()
    return max(float(np.abs(A[k] - B[k]).max() / np.abs(A[k]).max()) for k in A)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("hidden", NETS.values(), ids=NETS.keys())
def test_fused_step_equals_the_op_by_op_step(backend, dtype, tol, bn, hidden):
    _numba_compiles_this(backend, hidden, dtype)
    X, y = _data(dtype)
    ops = resolve(backend).ops
    a = init_network(D, hidden, K, bn=bn, dtype=dtype, rng=np.random.default_rng(1))
    b = copy.deepcopy(a)
    fused = fused_step_for(b, ops)
    assert isinstance(fused, FusedStep)
    rng = np.random.default_rng(2)
    for t in range(25):
        idx = rng.permutation(N)[:50]
        eta = 0.02 + 0.001 * t
        la = train_step(a, X[idx], y[idx], 0.01, eta, ops)
        Xb, yb = fused.gather(X, y, idx)
        lb = fused.step(Xb, yb, 0.01, eta, checked=False)
        assert lb == pytest.approx(la, rel=10 * tol)
    fused.detach()
    assert b.layers[0].W.flags.c_contiguous
    assert _worst(a, b) <= tol


def test_the_network_sees_every_update_while_the_step_is_attached(backend):
    X, y = _data(np.float64)
    net = init_network(D, NETS["3-layer"], K, bn=True, dtype=np.float64, rng=np.random.default_rng(1))
    fused = fused_step_for(net, resolve(backend).ops)
    W1_before = net.layers[0].W.copy()
    assert net.layers[0].mu_av is None
    fused.step(X[:50], y[:50], 0.0, 0.1)
    assert net.layers[0].W.shape == (20, D) and not np.array_equal(net.layers[0].W, W1_before)
    assert net.layers[0].mu_av is not None  # the first batch set the running averages


def test_a_non_finite_loss_leaves_the_network_as_it_was(backend):
    X, y = _data(np.float64)
    net = init_network(D, NETS["3-layer"], K, bn=True, dtype=np.float64, rng=np.random.default_rng(1))
    fused = fused_step_for(net, resolve(backend).ops)
    fused.step(X[:50], y[:50], 0.0, 0.1)
    before = copy.deepcopy(_arrays(net))
    bad = X[:50].copy()
    bad[3, 4] = np.inf
    assert not np.isfinite(fused.step(bad, y[:50], 0.0, 0.1))
    after = _arrays(net)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_the_checked_step_refuses_what_the_compiled_step_would_trust(backend):
    X, y = _data(np.float32)
    net = init_network(D, NETS["3-layer"], K, bn=True, dtype=np.float32, rng=np.random.default_rng(1))
    fused = fused_step_for(net, resolve(backend).ops)
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        fused.step(X[:10], np.full(10, 10), 0.0, 0.1)
    with pytest.raises(ValueError, match="labels must lie"):
        fused.step(X[:10], np.full(10, -1), 0.0, 0.1)
    with pytest.raises(ValueError, match=r"shape \(n >= 2, 60\)"):
        fused.step(X[:10, :59], y[:10], 0.0, 0.1)
    with pytest.raises(ValueError, match="integer labels"):
        fused.step(X[:10], y[:10].astype(float), 0.0, 0.1)
    fused.step(X[:10].astype(np.float64), y[:10].astype(np.uint8), 0.0, 0.1)  # converted, not refused


def test_only_a_backend_with_a_compiled_step_offers_one(backend):
    net = init_network(D, [20], K, bn=True, rng=np.random.default_rng(1))
    assert fused_step_for(net, resolve("numpy").ops) is None
    assert fused_step_for(net, resolve(backend).ops) is not None


@pytest.mark.parametrize("kw,optimizer", [
    (dict(bn=True, bn_placement="after"), "sgd"),
    (dict(bn=True, skip=True), "sgd"),
    (dict(bn=True), "adam"),
])
def test_configurations_the_fused_step_does_not_cover_take_the_op_path(backend, kw, optimizer):
    net = init_network(D, [20, 20, 20, 20], K, rng=np.random.default_rng(1), **kw)
    assert fused_step_for(net, resolve(backend).ops, optimizer=optimizer) is None


def test_fit_through_the_fused_step_equals_fit_op_by_op(backend, monkeypatch):
    """Two epochs of fit in float64: with the backend's fused step and without it (the same
    ops, the fused step hidden): same weights, history and step losses."""
    from types import SimpleNamespace

    X, y = _data(np.float64)
    data = SimpleNamespace(X_train=X[:300], y_train=y[:300], X_val=X[300:], y_val=y[300:])
    cfg = TrainConfig(hidden=NETS["3-layer"], batch=50, n_s=6, cycles=1, lam=0.01, dtype="float64", seed=3).validate()
    ops = resolve(backend).ops
    plain = SimpleNamespace(**{**vars(ops), "fused_step": None})
    nets = []
    hists = []
    for o in (ops, plain):
        net = init_network(D, cfg.hidden, K, bn=True, dtype=np.float64, rng=np.random.default_rng(4))
        hists.append(fit(net, data, cfg, o, progress=False))
        nets.append(net)
    assert _worst(*nets) <= 1e-12
    assert all(L.W.flags.c_contiguous for L in nets[0].layers)
    assert np.allclose(hists[0].step_loss, hists[1].step_loss, rtol=1e-12, atol=0)
    assert [r["val_accuracy"] for r in hists[0].evals] == [r["val_accuracy"] for r in hists[1].evals]


def test_stepper_uses_the_fused_step_only_where_it_applies(backend):
    X, y = _data(np.float32)
    net = init_network(D, [20], K, bn=True, rng=np.random.default_rng(1))
    assert Stepper(net, X, y, 0.0, resolve(backend).ops).fused is not None
    assert Stepper(net, X, y, 0.0, resolve("numpy").ops).fused is None


def test_the_gather_refuses_rows_it_would_read_out_of_bounds(backend):
    X, y = _data(np.float32)
    net = init_network(D, [20], K, bn=True, rng=np.random.default_rng(1))
    fused = fused_step_for(net, resolve(backend).ops)
    for idx in (np.array([0, N]), np.array([-1, 3]), np.array([0.0, 1.0]), np.array([[0, 1]])):
        with pytest.raises(ValueError, match="batch row indices|1-D integer array"):
            fused.gather(X, y, idx)
    with pytest.raises(ValueError, match="C-contiguous"):
        fused.gather(X.astype(np.float64), y, np.array([0, 1]))
    with pytest.raises(ValueError, match="C-contiguous"):
        fused.prefetch(np.asfortranarray(X), y, np.array([0, 1]))
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        Stepper(net, X, np.full(N, 10), 0.0, resolve(backend).ops)
    Xb, yb = fused.gather(X, y, np.array([5, 7]))
    assert np.array_equal(Xb, X[[5, 7]]) and np.array_equal(yb, y[[5, 7]])


def test_a_prefetched_batch_is_the_batch_asked_for(backend):
    X, y = _data(np.float32)
    net = init_network(D, [20], K, bn=True, rng=np.random.default_rng(1))
    fused = fused_step_for(net, resolve(backend).ops)
    a, b, c = np.arange(0, 50), np.arange(50, 100), np.arange(100, 150)
    Xa, _ = fused.gather(X, y, a)
    fused.prefetch(X, y, b)
    Xb, yb = fused.gather(X, y, b)  # the prefetched rows
    assert np.array_equal(Xb, X[b]) and np.array_equal(yb, y[b]) and np.array_equal(Xa, X[a])  # a's buffer untouched
    fused.prefetch(X, y, c)
    Xa2, _ = fused.gather(X, y, a)  # not what was prefetched: gathered now
    assert np.array_equal(Xa2, X[a])
    fused.detach()


@pytest.mark.parametrize("bn", [True, False])
def test_stepping_with_the_next_batch_gathered_ahead_equals_the_op_by_op_step(backend, bn):
    """The Stepper as fit drives it, gathering each next batch in a second thread (forced on:
    whether it is chosen depends on the machine's idle cores): float64 to 1e-12."""
    X, y = _data(np.float64)
    ops = resolve(backend).ops
    a = init_network(D, NETS["9-layer"], K, bn=bn, dtype=np.float64, rng=np.random.default_rng(1))
    b = copy.deepcopy(a)
    with threadpool_limits(1, user_api="blas"):  # one core for the step, so it may prefetch
        stepper = Stepper(b, X, y, 0.01, ops)
    assert stepper.cores == 1
    stepper.prefetch = True
    stepper.beside = stepper.fused.gathers_beside  # the kernel's thread where it has one (else a Python thread)
    stepper.fused.gather_beside(stepper.beside)
    rng = np.random.default_rng(2)
    batches = [rng.permutation(N)[:50] for _ in range(26)]
    for t in range(25):
        la = train_step(a, X[batches[t]], y[batches[t]], 0.01, 0.03, ops)
        lb = stepper(batches[t], 0.03, t, batches[t + 1])
        assert lb == pytest.approx(la, rel=1e-12)
        assert np.array_equal(stepper.Xb, X[batches[t]])
    stepper.close()
    assert _worst(a, b) <= 1e-12
    assert b.layers[0].W.flags.c_contiguous


def test_batches_of_byte_images_are_gathered_normalised(backend):
    """The training set of load_cifar10 is uint8 normalised when read (NormalisedImages): the
    fused step's gather, with and without the second thread, gives exactly X[idx]."""
    from fastnet.data.images import NormalisedImages

    rng = np.random.default_rng(5)
    U = rng.integers(0, 256, (N, D), dtype=np.uint8)
    mean, std = U.mean(axis=0), U.std(axis=0) + 1.0
    X = NormalisedImages(U, mean, std, np.float32)
    y = rng.integers(0, K, N)
    net = init_network(D, [20], K, bn=True, rng=np.random.default_rng(1))
    fused = fused_step_for(net, resolve(backend).ops)
    a, b = rng.permutation(N)[:50], rng.permutation(N)[:50]
    Xa, ya = fused.gather(X, y, a)
    assert Xa.tobytes() == X[a].tobytes() and np.array_equal(ya, y[a])
    fused.prefetch(X, y, b)
    Xb, yb = fused.gather(X, y, b)
    assert Xb.tobytes() == X[b].tobytes() and np.array_equal(yb, y[b])
    with pytest.raises(ValueError, match="NormalisedImages"):
        fused.gather(NormalisedImages(U, mean, std, np.float64), y, a)  # not the network's dtype
    fused.detach()


def test_a_source_changed_in_place_after_its_check_is_checked_again(backend):
    """The gather checks a source (X, y) once while it is the one it checked last: reshaped in
    place to rows the network cannot take, the same array is refused, not read out of bounds."""
    X, y = _data(np.float32)
    net = init_network(D, [20], K, bn=True, rng=np.random.default_rng(1))
    fused = fused_step_for(net, resolve(backend).ops)
    fused.gather(X, y, np.arange(10))
    X.shape = (2 * N, D // 2)
    with pytest.raises(ValueError, match="C-contiguous"):
        fused.gather(X, y, np.arange(10))
    fused.detach()


def test_a_prefetch_from_other_arrays_is_not_taken_for_these_rows(backend):
    X, y = _data(np.float32)
    X2 = X + 1
    net = init_network(D, [20], K, bn=True, rng=np.random.default_rng(1))
    fused = fused_step_for(net, resolve(backend).ops)
    rows = np.arange(10, 60)
    fused.prefetch(X, y, rows)
    Xb, _ = fused.gather(X2, y, rows)  # the same rows of another array: gathered anew
    assert np.array_equal(Xb, X2[rows])
    fused.detach()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("source", ["rows", "bytes"])
def test_the_step_with_the_next_batch_gathered_beside_it_has_the_one_core_bits(backend, dtype, source):
    """gather_beside (one core, a second thread of the kernel's gathering the next batch during
    the step): step by step, threads 2 and 1 alternating, the very losses and arrays of the
    one-core step that gathers after it, and each gathered batch exactly X[idx] -- from float
    rows or from uint8 images normalised as they are gathered."""
    from fastnet.data.images import NormalisedImages

    _numba_compiles_this(backend, NETS["3-layer"], dtype)
    rng = np.random.default_rng(5)
    if source == "bytes":
        U = rng.integers(0, 256, (N, D), dtype=np.uint8)
        X = NormalisedImages(U, U.mean(axis=0), U.std(axis=0) + 1.0, dtype)
    else:
        X = _data(dtype)[0]
    y = rng.integers(0, K, N)
    ops = resolve(backend).ops
    nets = [init_network(D, NETS["3-layer"], K, bn=True, dtype=dtype, rng=np.random.default_rng(1)) for _ in range(2)]
    plain, beside = (fused_step_for(net, ops) for net in nets)
    if not beside.gathers_beside:
        with pytest.raises(ValueError, match="gathers no batch beside"):
            beside.gather_beside()
        pytest.skip(f"{backend}'s step gathers no batch beside it (FusedStep.prefetch does, in a Python thread)")
    beside.gather_beside()
    batches = [rng.permutation(N)[:50] for _ in range(13)]
    for t in range(12):
        ahead = (X, y, batches[t + 1])
        losses = []
        for fused, threads in ((plain, 1), (beside, 2 if t % 3 else 1)):
            Xb, yb = fused.gather(X, y, batches[t])  # from t = 1 on: the batch gathered during the step before
            assert Xb.tobytes() == X[batches[t]].tobytes() and np.array_equal(yb, y[batches[t]])
            losses.append(fused.step(Xb, yb, 0.01, 0.05, checked=False, ahead=ahead, threads=threads))
        assert losses[0] == losses[1]
        assert beside._pending[1][2] is batches[t + 1]  # what the next gather returns at once
    for fused in (plain, beside):
        fused.detach()
    A, B = (_arrays(net) for net in nets)
    assert all(np.array_equal(A[k], B[k]) for k in A)


def test_the_stepper_gathers_beside_the_step_where_the_kernel_can(backend):
    """With BLAS on one thread and a core to spare, the Stepper prefetches: on a second thread
    of the kernel's inside the step (the extension's) or in a Python thread (Numba's), its steps
    equal to the op-by-op step either way (test_stepping_with_the_next_batch_gathered_ahead_...)."""
    X, y = _data(np.float64)
    ops = resolve(backend).ops
    net = init_network(D, NETS["3-layer"], K, bn=True, dtype=np.float64, rng=np.random.default_rng(1))
    with threadpool_limits(1, user_api="blas"):
        stepper = Stepper(net, X, y, 0.01, ops)
    assert stepper.beside == (stepper.prefetch and backend == "cython")
    assert stepper.fused.beside == stepper.beside
    stepper.close()


# ------------------------------------------------------------------ the step on two cores


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("hidden", NETS.values(), ids=NETS.keys())
def test_the_two_core_step_equals_the_op_by_op_step(backend, dtype, tol, bn, hidden):
    _numba_compiles_this(backend, hidden, dtype)
    """sgd_step_parallel (the first layer's products in halves, the next batch gathered beside
    the small layers) against train_step; each batch it gathered ahead is exactly X[idx]."""
    X, y = _data(dtype)
    ops = resolve(backend).ops
    a = init_network(D, hidden, K, bn=bn, dtype=dtype, rng=np.random.default_rng(1))
    b = copy.deepcopy(a)
    fused = fused_step_for(b, ops)
    fused.use_cores(2)
    rng = np.random.default_rng(2)
    batches = [rng.permutation(N)[:50] for _ in range(26)]
    Xb, yb = fused.gather(X, y, batches[0])
    for t in range(25):
        eta = 0.02 + 0.001 * t
        la = train_step(a, X[batches[t]], y[batches[t]], 0.01, eta, ops)
        ahead = (X, y, batches[t + 1]) if t < 24 else None  # the last step gathers nothing
        lb = fused.step(Xb, yb, 0.01, eta, checked=False, ahead=ahead)
        assert lb == pytest.approx(la, rel=10 * tol)
        if ahead is not None:
            Xb, yb = fused.gather(X, y, batches[t + 1])
            assert np.array_equal(Xb, X[batches[t + 1]]) and np.array_equal(yb, y[batches[t + 1]])
    fused.detach()
    assert b.layers[0].W.flags.c_contiguous
    assert _worst(a, b) <= tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_two_halves_on_one_thread_are_the_bits_of_two(backend, dtype):
    """The load guard's fallback (fastnet/training/load_guard.py) changes only the threads that
    run the two halves: a run switching between one and two threads step by step ends with
    exactly the arrays of a run on two threads throughout."""
    _numba_compiles_this(backend, NETS["3-layer"], dtype)
    X, y = _data(dtype)
    ops = resolve(backend).ops
    nets = [init_network(D, NETS["3-layer"], K, bn=True, dtype=dtype, rng=np.random.default_rng(1)) for _ in range(2)]
    steps = [fused_step_for(net, ops) for net in nets]
    for fused in steps:
        fused.use_cores(2)
    rng = np.random.default_rng(2)
    for t in range(12):
        idx = rng.permutation(N)[:50]
        losses = [fused.step(X[idx], y[idx], 0.01, 0.05, threads=threads) for fused, threads in zip(steps, (2, 1 + t % 2))]
        assert losses[0] == losses[1]
    for fused in steps:
        fused.detach()
    A, B = (_arrays(net) for net in nets)
    assert all(np.array_equal(A[k], B[k]) for k in A)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_a_network_whose_first_layer_is_not_the_work_cuts_its_small_layers_on_two_cores(backend, dtype, tol):
    """[50, 40] on 60 inputs: the first layer is 56 % of the step (not split_pays). The
    extension's two-core step cuts the layers above it in halves too (split_small): equal to
    the op-by-op step, and its one-thread fallback has the bits of two threads. Numba's step
    cannot cut them: BLAS's own threads."""
    hidden = [50, 40]
    X, y = _data(dtype)
    ops = resolve(backend).ops
    a = init_network(D, hidden, K, bn=True, dtype=dtype, rng=np.random.default_rng(1))
    b, c = copy.deepcopy(a), copy.deepcopy(a)
    steps = [fused_step_for(net, ops) for net in (b, c)]
    if not steps[0].cuts_small_layers:
        assert backend == "numba"
        with threadpool_limits(2, user_api="blas"):
            stepper = Stepper(copy.deepcopy(a), X, y, 0.01, ops)
            assert stepper.cores == 1
            stepper.close()
        return
    _numba_compiles_this(backend, hidden, dtype)
    for fused in steps:
        fused.use_cores(2)
        assert fused._split_small
    rng = np.random.default_rng(2)
    for t in range(25):
        idx = rng.permutation(N)[:50]
        la = train_step(a, X[idx], y[idx], 0.01, 0.03, ops)
        lb, lc = (fused.step(X[idx], y[idx], 0.01, 0.03, threads=threads) for fused, threads in zip(steps, (2, 1 + t % 2)))
        assert lb == pytest.approx(la, rel=10 * tol) and lb == lc
    for fused in steps:
        fused.detach()
    assert _worst(a, b) <= tol
    B, C = _arrays(b), _arrays(c)
    assert all(np.array_equal(B[k], C[k]) for k in B)


def test_the_two_core_step_gathers_byte_images_exactly(backend):
    from fastnet.data.images import NormalisedImages

    rng = np.random.default_rng(5)
    U = rng.integers(0, 256, (N, D), dtype=np.uint8)
    X = NormalisedImages(U, U.mean(axis=0), U.std(axis=0) + 1.0, np.float32)
    y = rng.integers(0, K, N)
    net = init_network(D, NETS["3-layer"], K, bn=True, rng=np.random.default_rng(1))
    fused = fused_step_for(net, resolve(backend).ops)
    fused.use_cores(2)
    batches = [rng.permutation(N)[:37] for _ in range(4)]  # 37: blocks of 4 rows and a rest
    Xb, yb = fused.gather(X, y, batches[0])
    for now, after in zip(batches, batches[1:]):
        assert Xb.tobytes() == X[now].tobytes()
        fused.step(Xb, yb, 0.01, 0.05, checked=False, ahead=(X, y, after))
        Xb, yb = fused.gather(X, y, after)
        assert Xb.tobytes() == X[after].tobytes() and np.array_equal(yb, y[after])
    fused.detach()


def test_a_non_finite_loss_on_two_cores_leaves_the_network_as_it_was(backend):
    X, y = _data(np.float64)
    net = init_network(D, NETS["3-layer"], K, bn=True, dtype=np.float64, rng=np.random.default_rng(1))
    fused = fused_step_for(net, resolve(backend).ops)
    fused.use_cores(2)
    fused.step(X[:50], y[:50], 0.0, 0.1)
    before = copy.deepcopy(_arrays(net))
    bad = X[:50].copy()
    bad[3, 4] = np.inf
    assert not np.isfinite(fused.step(bad, y[:50], 0.0, 0.1, ahead=(X, y, np.arange(50, 100))))
    assert all(np.array_equal(before[k], v) for k, v in _arrays(net).items())
    Xn, _ = fused.gather(X, y, np.arange(50, 100))  # the next batch was still gathered
    assert np.array_equal(Xn, X[50:100])
    fused.detach()


def test_two_cores_put_blas_on_one_thread_until_detached(backend):
    X, y = _data(np.float32)
    net = init_network(D, [20], K, bn=True, rng=np.random.default_rng(1))
    with threadpool_limits(2, user_api="blas"):
        fused = fused_step_for(net, resolve(backend).ops)
        fused.use_cores(2)
        assert blas_thread_count() == 1  # each core's BLAS call runs on that core alone
        fused.detach()
        assert blas_thread_count() == 2 and fused.cores == 1
    with pytest.raises(ValueError, match="1 or 2 cores"):
        fused.use_cores(3)


def test_the_split_is_for_networks_whose_first_layer_is_the_work(backend):
    from fastnet.training.fused import split_pays

    def net(hidden):
        return init_network(3072, hidden, 10, bn=True, rng=np.random.default_rng(0)).sizes

    assert split_pays(net((50, 50))) and split_pays(net((50, 30, 20, 20, 10, 10, 10, 10)))
    assert not split_pays(net((1024, 512, 256)))  # 83 %: BLAS's own two threads are faster


def test_the_stepper_steps_on_two_cores_when_blas_has_two_threads(backend):
    # 300 inputs: the first layer is 97 % of the step's work, where the split pays (split_pays)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((N, 300)).astype(np.float32), rng.integers(0, K, N)
    ops = resolve(backend).ops
    net = init_network(300, [20], K, bn=True, rng=np.random.default_rng(1))
    if fused_step_for(net, ops).parallel_threads() < 2:
        pytest.skip(f"{backend}'s parallel loops have a single thread here")
    with threadpool_limits(2, user_api="blas"):
        two = Stepper(net, X, y, 0.0, ops)
        assert two.cores == 2 and not two.prefetch and two.spare_cores == 2
        two.close()
        augmented = Stepper(net, X, y, 0.0, ops, augment=lambda Xb, t: Xb)
        assert augmented.cores == 1
        augmented.close()
        wide = init_network(300, [200, 100], K, bn=True, rng=np.random.default_rng(1))  # 300 x 200: 85 % of the step
        wide_stepper = Stepper(wide, X, y, 0.0, ops)
        assert wide_stepper.cores == (2 if wide_stepper.fused.cuts_small_layers else 1)
        wide_stepper.close()
    with threadpool_limits(1, user_api="blas"):
        one = Stepper(net, X, y, 0.0, ops)
        assert one.cores == 1
        one.close()
        wide_one = Stepper(wide, X, y, 0.0, ops)  # one core: the small layers' single calls, as ever
        assert wide_one.cores == 1 and not wide_one.fused._split_small
        wide_one.close()


# ------------------------------------------------- the matrix-multiply provider (--gemm)
# Intel MKL (pip install 'fastnet[mkl]') rounds its products in its own order, as OpenBLAS
# does in its: against the op-by-op step (NumPy's OpenBLAS) it is held to the tolerances above.

from fastnet.backends import gemm_choice, providers  # noqa: E402

needs_mkl = pytest.mark.skipif(gemm_choice.table("mkl") is None, reason="Intel MKL is not installed (pip install 'fastnet[mkl]')")
needs_avx512 = pytest.mark.skipif(gemm_choice.table("openblas-avx512") is None,
                                  reason="OpenBLAS on AVX-512 kernels cannot run here (a CPU without AVX-512, or no scipy-openblas32)")
OTHER_PROVIDERS = [pytest.param("mkl", marks=needs_mkl), pytest.param("openblas-avx512", marks=needs_avx512)]


def _fused_run(backend, dtype, bn, hidden, gemm, cores, steps=25):
    """(the op-by-op network, the fused one, their losses) after ``steps`` steps."""
    X, y = _data(dtype)
    ops = resolve(backend).ops
    a = init_network(D, hidden, K, bn=bn, dtype=dtype, rng=np.random.default_rng(1))
    b = copy.deepcopy(a)
    fused = fused_step_for(b, ops, gemm=gemm)
    assert fused.gemm == gemm
    fused.use_cores(cores)
    rng = np.random.default_rng(2)
    losses = []
    for t in range(steps):
        idx = rng.permutation(N)[:50]
        eta = 0.02 + 0.001 * t
        la = train_step(a, X[idx], y[idx], 0.01, eta, ops)
        Xb, yb = fused.gather(X, y, idx)
        losses.append((la, fused.step(Xb, yb, 0.01, eta, checked=False)))
    fused.detach()
    return a, b, losses


@pytest.mark.parametrize("gemm", OTHER_PROVIDERS)
@pytest.mark.parametrize("cores", [1, 2])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("hidden", NETS.values(), ids=NETS.keys())
def test_the_fused_step_on_another_provider_equals_the_op_by_op_step(backend, dtype, tol, hidden, cores, gemm):
    _numba_compiles_this(backend, hidden, dtype)
    a, b, losses = _fused_run(backend, dtype, True, hidden, gemm, cores)
    for la, lb in losses:
        assert lb == pytest.approx(la, rel=10 * tol)
    assert _worst(a, b) <= tol


@pytest.mark.parametrize("gemm", ["openblas", *OTHER_PROVIDERS])
@pytest.mark.parametrize("cores", [1, 2])
def test_two_runs_on_one_provider_are_bit_identical(backend, gemm, cores):
    _numba_compiles_this(backend, NETS["3-layer"], np.float64)
    dtype = np.float64 if backend == "numba" else np.float32
    _, first, l1 = _fused_run(backend, dtype, True, NETS["3-layer"], gemm, cores, steps=10)
    _, second, l2 = _fused_run(backend, dtype, True, NETS["3-layer"], gemm, cores, steps=10)
    assert [lb for _, lb in l1] == [lb for _, lb in l2]
    A, B = _arrays(first), _arrays(second)
    assert all(A[k].tobytes() == B[k].tobytes() for k in A)


def test_the_default_table_is_openblas_bit_for_bit(backend):
    """No provider named (every caller before --gemm existed): the kernel's own table, NumPy's
    OpenBLAS -- the same bits as naming "openblas"."""
    _numba_compiles_this(backend, NETS["3-layer"], np.float64)
    dtype = np.float64 if backend == "numba" else np.float32
    _, default, l1 = _fused_run(backend, dtype, True, NETS["3-layer"], None, 1, steps=10)
    _, named, l2 = _fused_run(backend, dtype, True, NETS["3-layer"], "openblas", 1, steps=10)
    assert np.array_equal(gemm_choice.table("openblas"), resolve(backend).ops.fused_step.BLAS)
    A, B = _arrays(default), _arrays(named)
    assert l1 == l2 and all(A[k].tobytes() == B[k].tobytes() for k in A)


def test_fit_hands_the_fused_step_the_provider_it_resolved(backend, monkeypatch):
    from types import SimpleNamespace

    used = []
    monkeypatch.setattr(FusedStep, "use_gemm", lambda self, name: used.append(name))
    X, y = _data(np.float64)
    data = SimpleNamespace(X_train=X[:300], y_train=y[:300], X_val=X[300:], y_val=y[300:])
    cfg = TrainConfig(hidden=[20], batch=50, n_s=3, cycles=1, dtype="float64").validate()
    monkeypatch.setitem(gemm_choice._tables, "mkl", None)  # auto with nothing else to run: OpenBLAS, nothing measured
    monkeypatch.setattr(providers, "avx512_upgrade", lambda: False)
    fit(init_network(D, cfg.hidden, K, dtype=np.float64, rng=np.random.default_rng(4)), data, cfg, resolve(backend).ops, progress=False)
    fit(init_network(D, cfg.hidden, K, dtype=np.float64, rng=np.random.default_rng(4)), data, cfg, resolve(backend).ops, progress=False, gemm="mkl")
    assert used == ["openblas", "mkl"]


def test_a_provider_that_is_not_installed_is_refused_before_a_step(backend, monkeypatch):
    monkeypatch.setitem(gemm_choice._tables, "mkl", None)
    net = init_network(D, [20], K, rng=np.random.default_rng(1))
    fused = fused_step_for(net, resolve(backend).ops)
    with pytest.raises(ValueError, match="'mkl' is not installed"):
        fused.use_gemm("mkl")
    fused.detach()

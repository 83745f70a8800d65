"""Whole training steps and a short real training run agree across backends.

The op tests compare one op at a time; these compare what the user gets: the loss, every
gradient and every updated parameter after a full step of the assignment's networks, and the
test accuracy after an epoch of training on the real CIFAR-10.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import COMPILED, compiled_module

from fastnet.backends import load
from fastnet.model.network import backward, forward_train, init_network
from fastnet.training.stepper import train_step

D, K, N = 3072, 10, 100
NETWORKS = {"3-layer": (50, 50), "9-layer": (50, 30, 20, 20, 10, 10, 10, 10)}

# Tolerances of a whole step, per dtype, for every gradient, parameter and running average,
# relative to that array's largest entry (the entries of one array share a scale; entries near
# 0 are differences of terms of that scale, so their error is absolute in it). Measured worst
# over both networks, BN and not, 4 batches, both backends:
# float64: 3.3e-15 (gradients), 6e-16 (three steps); 1e-11 leaves a 3000x margin and still
#   fails any wrong term by many orders of magnitude.
# float32: 2.5e-6 (a 9-layer BN gradient: reference sums in float32, kernels in float64,
#   divided by a batch std at each BN layer), 5e-7 (three steps); 1e-4 leaves 40x.
STEP_RTOL = {np.dtype(np.float64): 1e-11, np.dtype(np.float32): 1e-4}


@pytest.fixture(params=COMPILED)
def backend(request):
    compiled_module(request.param)  # skips (or fails under FASTNET_REQUIRE_CYTHON=1) when absent
    return load(request.param)


def _batch(dtype, seed=0):
    """A CIFAR-shaped normalised batch: 100 rows of 3072 standard-normal features."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, D)).astype(dtype), rng.integers(0, K, N)


def _net(hidden, bn, dtype):
    return init_network(D, hidden, K, bn=bn, init="he", dtype=dtype, rng=np.random.default_rng(1))


def _assert_close(got: dict, want: dict, dtype, what: str) -> None:
    assert got.keys() == want.keys()
    rtol = STEP_RTOL[np.dtype(dtype)]
    for name in want:
        scale = float(np.max(np.abs(want[name]))) or 1.0
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=rtol * scale, err_msg=f"{what} {name}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("bn", [True, False], ids=["bn", "no-bn"])
@pytest.mark.parametrize("arch", NETWORKS)
def test_gradients_of_a_step_equal_the_reference(backend, arch, bn, dtype):
    X, y = _batch(dtype)
    ref_ops = load("numpy").ops
    net = _net(NETWORKS[arch], bn, dtype)
    want_cache = forward_train(net, X, y, ref_ops)
    got_cache = forward_train(net, X, y, backend.ops)
    np.testing.assert_allclose(got_cache.loss, want_cache.loss, rtol=STEP_RTOL[np.dtype(dtype)])
    want = backward(net, want_cache, y, 0.005, ref_ops)
    got = backward(net, got_cache, y, 0.005, backend.ops)
    _assert_close(got, want, dtype, f"{backend.name} gradient")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("bn", [True, False], ids=["bn", "no-bn"])
def test_a_training_step_equals_the_reference(backend, bn, dtype):
    """train_step: loss, updated parameters and running BN averages, 3-layer network."""
    X, y = _batch(dtype, seed=2)
    ours, theirs = _net((50, 50), bn, dtype), _net((50, 50), bn, dtype)
    for _ in range(3):  # three steps: the running averages go through both branches of eq (38)
        loss_ours = train_step(ours, X, y, lam=0.005, eta=0.05, ops=backend.ops)
        loss_theirs = train_step(theirs, X, y, lam=0.005, eta=0.05, ops=load("numpy").ops)
        assert loss_ours == pytest.approx(loss_theirs, rel=STEP_RTOL[np.dtype(dtype)])
    _assert_close(ours.params(), theirs.params(), dtype, f"{backend.name} parameter")
    _assert_close(ours.running_stats(), theirs.running_stats(), dtype, f"{backend.name} running average")


def _one_blas_thread():
    """BLAS limited to one thread where threadpoolctl is installed: the results are the same,
    and on a busy 2-core machine OpenBLAS's second thread makes these small products 3-15x
    slower (this test took 43 s instead of 16 s at load average 5)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


@pytest.mark.data
def test_short_real_training_gives_the_same_accuracy_on_every_backend(real_cifar_dir):
    """450 steps of the 3-layer BN network on 10,000 CIFAR-10 training images, per backend.

    Same initialisation and batch order everywhere; the accuracies on the 10,000 test images
    must agree within 0.5 points. (A subset trains and evaluates 5x faster than the whole
    45,000 and reaches ~43%, far above chance, in the same 450 steps.) Run in float64: in float32 the trajectories can part for good at one ReLU
    whose pre-activation is below float32 resolution (measured: seed 2, step 105, a
    pre-activation of 3.7e-8 is positive on the reference and 0 on cython; after the epoch
    the accuracies are 43.50 vs 44.13), which would make the comparison a statistical
    one rather than a test of the backends. In float64 such a flip needs |pre-activation|
    ~1e-16 and the runs end equal.
    """
    from types import SimpleNamespace

    from fastnet.data.cifar10 import load_cifar10
    from fastnet.model.network import evaluate
    from fastnet.training.config import TrainConfig, new_network
    from fastnet.training.loop import fit

    data = load_cifar10(real_cifar_dir, dtype=np.float64, progress=False)
    train = SimpleNamespace(X_train=data.X_train[:10_000], y_train=data.y_train[:10_000],
                            X_val=data.X_val[:0], y_val=data.y_val[:0])
    cfg = TrainConfig(hidden=(50, 50), bn=True, n_s=225, cycles=1, seed=2, dtype="float64").validate()
    accuracy = {}
    with _one_blas_thread():
        for name in ("numpy",) + COMPILED:
            if not load(name).available:
                compiled_module(name)  # skip or fail as the fixture would
            ops = load(name).ops
            net = new_network(cfg, data.X_train.shape[1], 10)
            fit(net, train, cfg, ops, progress=False)
            accuracy[name] = evaluate(net, data.X_test, data.y_test, cfg.lam, ops).accuracy
    assert min(accuracy.values()) > 0.35, accuracy  # it learnt (chance is 0.10)
    spread = max(accuracy.values()) - min(accuracy.values())
    assert spread <= 0.005, f"test accuracies differ by {100 * spread:.2f} points: {accuracy}"


def test_the_fused_step_trains_on_rows_of_any_layout(backend):
    """A data set built by hand (the API's ``data=``) may hold its rows in Fortran order: the
    fused step's gather reads C-contiguous rows, so the Stepper converts them once, and the run
    is the one on C-ordered rows, bit for bit."""
    from fastnet.training.stepper import Stepper

    X, y = _batch(np.float32)
    nets = [init_network(D, [20], K, bn=True, rng=np.random.default_rng(1)) for _ in range(2)]
    for net, rows in zip(nets, (X, np.asfortranarray(X))):
        stepper = Stepper(net, rows, y, 0.01, backend.ops)
        assert stepper.fused is not None
        for t in range(3):
            stepper(np.arange(t * 30, t * 30 + 30), 0.05, t)
        stepper.close()
    a, b = ({**n.params(), **n.running_stats()} for n in nets)
    assert all(np.array_equal(a[k], b[k]) for k in a)

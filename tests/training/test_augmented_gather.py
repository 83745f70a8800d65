"""Augmentation inside the fused step's gather (fastnet.training.fused, ``gather_moved_rows``
of both compiled kernels) against fastnet.data.augment.augment_batch, its NumPy reference.

The moved gather only copies (and, from uint8 images, normalises by the very arithmetic of
the plain gather): every comparison here is exact, bit for bit.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from fastnet.backends import load, resolve
from fastnet.data.augment import MAX_SHIFT, augment_batch, augment_moves
from fastnet.data.images import NormalisedImages
from fastnet.model.network import init_network
from fastnet.training.fused import fused_step_for
from fastnet.training.stepper import ImageAugment, Stepper

FUSED = [pytest.param(name, marks=pytest.mark.skipif(not load(name).available, reason=f"{name} unavailable: {load(name).reason}"))
         for name in ("numba", "cython")]
pytestmark = pytest.mark.parametrize("backend", FUSED)

D, K, N = 3072, 10, 120  # augmentation moves CIFAR-10's 3 x 32 x 32 images


def _images(dtype, kind: str, seed: int = 0):
    """(X, y): N images as rows of ``dtype`` ("rows") or as uint8 normalised when read ("bytes")."""
    rng = np.random.default_rng(seed)
    U = rng.integers(0, 256, (N, D), dtype=np.uint8)
    y = rng.integers(0, K, N)
    X = NormalisedImages(U, U.mean(axis=0), U.std(axis=0) + 1.0, dtype)
    return (X if kind == "bytes" else X[np.arange(N)]), y


def _net(dtype=np.float32, hidden=(20,)):
    return init_network(D, list(hidden), K, bn=True, dtype=dtype, rng=np.random.default_rng(1))


@pytest.mark.parametrize("kind", ["rows", "bytes"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shift", [0, 2, MAX_SHIFT])
def test_the_moved_gather_is_augment_batch(backend, kind, dtype, shift):
    if backend == "numba" and dtype != np.float32:
        pytest.skip("Numba's gather is checked in float32 (a compilation per dtype)")
    X, y = _images(dtype, kind)
    fused = fused_step_for(_net(dtype), resolve(backend).ops)
    idx = np.random.default_rng(3).permutation(N)[:37]  # 37: the two-core gather's blocks of 4 rows and a rest
    moves = augment_moves(np.random.default_rng(7), len(idx), shift)
    assert moves[:, 2].any() and not moves[:, 2].all()  # some images flipped, some not
    Xb, yb = fused.gather(X, y, idx, moves)
    want = augment_batch(X[idx], np.random.default_rng(7), shift)  # the same draws
    assert Xb.tobytes() == want.tobytes() and np.array_equal(yb, y[idx])
    fused.detach()


def test_an_augmented_batch_gathered_ahead_is_the_one_asked_for(backend):
    """Gathered ahead in a Python thread, beside the one-core step on the kernel's second thread,
    or beside the small layers on two cores: exactly augment_batch; the same rows with other
    moves are gathered anew."""
    X, y = _images(np.float32, "bytes")
    ops = resolve(backend).ops
    rng = np.random.default_rng(2)
    for cores, beside in ((1, False), (1, True), (2, False)):
        fused = fused_step_for(_net(), ops)
        if beside and not fused.gathers_beside:
            continue  # Numba's step (FusedStep.prefetch's Python thread instead)
        fused.use_cores(cores)
        fused.gather_beside(beside)
        idx = rng.permutation(N)[:37]
        Xb, yb = fused.gather(X, y, idx, augment_moves(np.random.default_rng(0), 37, 3))
        for t in range(1, 4):
            nxt = rng.permutation(N)[:37]
            moves = augment_moves(np.random.default_rng(t), 37, 3)
            if cores == 1 and not beside:
                fused.prefetch(X, y, nxt, moves)
            else:
                fused.step(Xb, yb, 0.01, 0.05, checked=False, ahead=(X, y, nxt, moves))
            Xb, yb = fused.gather(X, y, nxt, moves)
            assert Xb.tobytes() == augment_batch(X[nxt], np.random.default_rng(t), 3).tobytes()
        fused.prefetch(X, y, nxt, moves)
        other = augment_moves(np.random.default_rng(99), 37, 3)
        Xo, _ = fused.gather(X, y, nxt, other)  # the rows gathered ahead, moved otherwise: not taken
        assert Xo.tobytes() == augment_batch(X[nxt], np.random.default_rng(99), 3).tobytes()
        fused.detach()


def test_the_moved_gather_refuses_moves_it_would_misread(backend):
    X, y = _images(np.float32, "rows")
    fused = fused_step_for(_net(), resolve(backend).ops)
    idx = np.arange(10)
    good = augment_moves(np.random.default_rng(0), 10, 3)
    for bad, match in ((good[:9], r"\(10, 3\) int64"), (good.astype(np.int32), "int64"), (np.asfortranarray(good), "C-contiguous"),
                       (good + np.array([MAX_SHIFT + 1, 0, 0]), f"at most {MAX_SHIFT} pixels")):
        with pytest.raises(ValueError, match=match):
            fused.gather(X, y, idx, bad)
    small = fused_step_for(init_network(60, [8], K, rng=np.random.default_rng(0)), resolve(backend).ops)
    rows = np.zeros((N, 60), np.float32)
    with pytest.raises(ValueError, match="3x32x32 images"):
        small.gather(rows, y, idx, good)
    fused.detach()
    small.detach()


def _augmented_run(backend, dtype, augment, threads: int, steps: int = 8, guard_threads: int | None = None):
    """The network after ``steps`` augmented steps through a Stepper, as fit drives it."""
    X, y = _images(dtype, "bytes")
    net = _net(dtype)
    batches = [np.random.default_rng([5, t]).permutation(N)[:50] for t in range(steps + 1)]
    with threadpool_limits(threads, user_api="blas"):
        stepper = Stepper(net, X, y, 0.01, resolve(backend).ops, augment=augment)
        if guard_threads is not None:
            stepper.guard.threads = lambda: guard_threads
        for t in range(steps):
            stepper(batches[t], 0.05, t, batches[t + 1])
        cores = stepper.cores
        stepper.close()
    return {**net.params(), **net.running_stats()}, cores


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_an_augmented_run_on_one_thread_keeps_its_bits(backend):
    """Augmenting in the gather instead of in Python between steps changes nothing but where
    the copy is made: on one BLAS thread the run ends with exactly the arrays of augment_batch's."""
    dtype = np.float64 if backend == "numba" else np.float32  # Numba's step: compiled for 3-layer float64 in test_fused.py
    augment = ImageAugment(seed=4, shift=3)
    in_gather, cores = _augmented_run(backend, dtype, augment, threads=1, steps=6)
    in_python, _ = _augmented_run(backend, dtype, lambda Xb, t: augment(Xb, t), threads=1, steps=6)
    assert cores == 1 and _equal(in_gather, in_python)


def test_an_augmented_run_on_two_cores_has_the_bits_of_its_one_thread_fallback(backend):
    """With two BLAS threads an augmented run splits itself over two cores (the gather of the
    next augmented batch beside the small layers); the load guard's fallback to one thread
    keeps its bits, as without augmentation."""
    if resolve(backend).ops.fused_step.parallel_threads() < 2:
        pytest.skip(f"{backend}'s parallel loops have a single thread here")
    dtype = np.float64 if backend == "numba" else np.float32
    augment = ImageAugment(seed=4, shift=2)
    two, cores = _augmented_run(backend, dtype, augment, threads=2)
    one, _ = _augmented_run(backend, dtype, augment, threads=2, guard_threads=1)
    assert cores == 2 and _equal(two, one)
    _, python_cores = _augmented_run(backend, dtype, lambda Xb, t: augment(Xb, t), threads=2, steps=1)
    assert python_cores == 1  # augmented in Python between steps: BLAS's own two threads


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k", [1, 23, 25])
def test_an_augmented_fused_run_resumes_bit_for_bit(backend, fake, tmp_path, threads, k):
    """Interrupted after k steps (mid-epoch, the last step of one, the first of the next) and
    resumed from its checkpoint, an augmented run through the fused step -- its batches
    augmented in the gather, the next one gathered ahead -- ends as the run never stopped."""
    from conftest import StopAt, small_cfg

    from fastnet.training.checkpoint import load_checkpoint, save_checkpoint
    from fastnet.training.config import new_network
    from fastnet.training.loop import fit
    from fastnet.training.state import History, Interrupted

    if backend == "numba":
        pytest.skip("Numba's step is compiled for the 3-layer network in float64 (test_fused.py)")
    ops = resolve(backend).ops
    cfg = small_cfg(backend=backend, augment=True, augment_shift=2)

    def arrays(net):
        return {k: a.tobytes() for k, a in {**net.params(), **net.running_stats()}.items()}

    with threadpool_limits(threads, user_api="blas"):
        net = new_network(cfg, 3072, 10)
        fit(net, fake, cfg, ops, progress=False)
        want = arrays(net)
        net, history = new_network(cfg, 3072, 10), History()
        path = tmp_path / "checkpoint.npz"

        def checkpoint(position, net=net, history=history):
            save_checkpoint(path, net, history, position, cfg.to_dict())

        with pytest.raises(Interrupted):
            fit(net, fake, cfg, ops, history, progress=False, checkpoint=checkpoint, stop=StopAt(history, k))
        ck = load_checkpoint(path)
        fit(ck.net, fake, cfg, ops, ck.history, progress=False, start=ck.position)
    assert arrays(ck.net) == want

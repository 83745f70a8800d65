"""One training step and one epoch per backend, on CIFAR-10-sized synthetic data, float32.

Networks: the assignment's 3-layer [50, 50] and 9-layer [50, 30, 20, 20, 10, 10, 10, 10],
with and without batch norm. Data: 45,000 x 3072 float32 standard-normal rows (the training
split's shape; the values do not change the time) and labels 0..9, n_batch = 100.

* ``step``: one step as ``fit`` takes it (:class:`fastnet.training.stepper.Stepper`: the backend's fused
  step where it has one -- Numba's -- else :func:`fastnet.training.stepper.train_step`: forward, running
  BN averages, backward, SGD) on a fixed mini-batch.
* ``epoch``: 450 steps over a fresh permutation, each gathering its rows as ``fit`` does
  (the next batch gathered while a step runs, where the fused step does that); no
  evaluation. One round is a whole epoch, so few rounds are timed.

With ``--benchmark-disable`` (a smoke test) the data shrinks to 1,000 rows, so the smoke run
neither allocates 550 MB nor takes seconds per backend.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastnet.model.network import init_network
from fastnet.training.stepper import Stepper

N_TRAIN, D, K, BATCH = 45_000, 3072, 10, 100
LAM, ETA = 0.005, 0.01  # fixed eta: the cyclic schedule costs nothing measurable
NETWORKS = {
    "3-layer": (50, 50),
    "9-layer": (50, 30, 20, 20, 10, 10, 10, 10),
}


@pytest.fixture(scope="module")
def data(request):
    smoke = request.config.getoption("benchmark_disable", False)
    n = 1_000 if smoke else N_TRAIN
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, D), dtype=np.float32)
    y = rng.integers(0, K, n)
    return X, y


def _network(hidden, bn: bool):
    return init_network(D, hidden, K, bn=bn, init="he", dtype=np.float32, rng=np.random.default_rng(1))


@pytest.mark.parametrize("bn", [True, False], ids=["bn", "no-bn"])
@pytest.mark.parametrize("arch", NETWORKS)
def test_train_step(benchmark, measure, ops, data, arch, bn):
    benchmark.group = f"step {arch} {'bn' if bn else 'no-bn'} n=100"
    X, y = data
    stepper = Stepper(_network(NETWORKS[arch], bn), X, y, LAM, ops)
    idx = np.arange(BATCH)
    measure(stepper, idx, ETA)
    stepper.close()


@pytest.mark.parametrize("bn", [True, False], ids=["bn", "no-bn"])
@pytest.mark.parametrize("arch", NETWORKS)
def test_epoch(benchmark, measure, ops, data, arch, bn):
    benchmark.group = f"epoch {arch} {'bn' if bn else 'no-bn'} 45000x3072"
    X, y = data
    stepper = Stepper(_network(NETWORKS[arch], bn), X, y, LAM, ops)
    rng = np.random.default_rng(2)
    n = X.shape[0]
    steps = n // BATCH

    def epoch():
        perm = rng.permutation(n)
        for j in range(steps):
            stepper(perm[j * BATCH : (j + 1) * BATCH], ETA, j, perm[(j + 1) * BATCH : (j + 2) * BATCH] if j + 1 < steps else None)

    # Warm-up: one step compiles / loads caches; the timed rounds are whole epochs.
    measure(epoch, warmup=lambda: stepper(np.arange(BATCH), ETA), rounds=3)
    stepper.close()

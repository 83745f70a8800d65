"""Per-epoch evaluation against a training epoch, side by side in one ``fit`` (issue #7: <= 0.35).

    pytest bench/bench_eval.py --benchmark-only                 # 1 BLAS thread, ~2 min idle
    FASTNET_BENCH_BLAS_THREADS=2 pytest bench/bench_eval.py --benchmark-only -k cython
    pytest bench/bench_eval.py --benchmark-disable              # smoke test, seconds

Each round is one epoch of :func:`fastnet.training.loop.fit` as ``fastnet-train`` runs it (float32,
batch 100, the cyclic schedule, a fresh network from the default configuration) on
CIFAR-10-sized synthetic data: 45,000 training and 5,000 validation rows of 3072 standard-normal
features (the values do not change the time). ``fit`` times its training steps and its
end-of-epoch evaluation -- loss, cost and accuracy of the training set (all of it, or the
fixed subset of ``--eval-train-images 10000``) and of the validation set -- apart, in
``History.train_seconds`` and ``eval_seconds``: the ratio of the two is the figure of the
issue. Networks: the default 3-layer [50, 50] and the 9-layer [50, 30, 20, 20, 10, 10, 10, 10],
with batch norm. The table at the end gives, per cell, the minimum over the rounds of each
time (the least noisy estimate on a shared machine) and their ratio; the benchmark's own
time is that of the whole round.

With ``--benchmark-disable`` the data shrinks to 1,000 + 200 rows and no table is printed.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from fastnet.training.config import TrainConfig, new_network
from fastnet.training.loop import fit

N_TRAIN, N_VAL, D, K, BATCH = 45_000, 5_000, 3072, 10, 100
NETWORKS = {
    "3-layer": (50, 50),
    "9-layer": (50, 30, 20, 20, 10, 10, 10, 10),
}
TRAIN_EVAL = {"all": 0, "10k": 10_000}  # --eval-train-images: 0 = the whole training set
TARGET = 0.35
_cells: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}


def _dataset(n_train: int, n_val: int) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_train + n_val, D), dtype=np.float32)
    y = rng.integers(0, K, n_train + n_val)
    return SimpleNamespace(X_train=X[:n_train], y_train=y[:n_train], X_val=X[n_train:], y_val=y[n_train:])


@pytest.fixture(scope="module")
def data(request):
    smoke = request.config.getoption("benchmark_disable", False)
    return _dataset(1_000, 200) if smoke else _dataset(N_TRAIN, N_VAL)


class _Table:
    """A plugin registered for this module's run: prints the ratios after pytest-benchmark's tables."""

    def pytest_terminal_summary(self, terminalreporter):
        tr = terminalreporter
        threads = os.environ.get("FASTNET_BENCH_BLAS_THREADS", "1")   # as bench/conftest.py applies it
        tr.section(f"fastnet: evaluation / training per epoch, one fit (target <= {TARGET}), BLAS threads {threads}, "
                   f"load average {os.getloadavg()[0]:.2f}")
        tr.write_line(f"{'network':10s} {'train eval':>10s} {'backend':>8s} {'epoch s':>9s} {'eval s':>8s} {'ratio':>7s}")
        for (arch, subset), row in sorted(_cells.items()):
            for backend, (train, ev) in sorted(row.items()):
                flag = "" if ev / train <= TARGET else "  above target"
                tr.write_line(f"{arch:10s} {subset:>10s} {backend:>8s} {train:9.3f} {ev:8.3f} {ev / train:7.3f}{flag}")


@pytest.fixture(scope="module", autouse=True)
def _table(request):
    if not request.config.getoption("benchmark_disable", False):
        request.config.pluginmanager.register(_Table(), "fastnet-bench-eval-table")
    yield


@pytest.mark.parametrize("subset", TRAIN_EVAL)
@pytest.mark.parametrize("arch", NETWORKS)
def test_epoch_and_its_evaluation(benchmark, measure, backend_name, ops, data, arch, subset):
    benchmark.group = f"fit: epoch + evaluation, {arch}, train eval {subset}"
    n = len(data.y_train)
    per_epoch = n // BATCH
    cfg = TrainConfig(hidden=NETWORKS[arch], n_s=per_epoch // 2, cycles=1, backend=backend_name,
                      eval_train_images=TRAIN_EVAL[subset]).validate()
    small = _dataset(10 * BATCH, BATCH)
    warm = TrainConfig(hidden=NETWORKS[arch], n_s=5, cycles=1, backend=backend_name).validate()
    times: list[tuple[float, float]] = []

    def epoch():
        history = fit(new_network(cfg, D, K), data, cfg, ops, progress=False)
        assert len(history.evals) == 1 and history.steps == per_epoch
        times.append((history.train_seconds, history.eval_seconds))

    # Warm-up: a 10-step fit compiles (Numba) or loads caches, and loads every BLAS the run uses
    # (the fused step brings SciPy's OpenBLAS, which the session's thread limit, set before it
    # was loaded, would miss); then the limit again, over all of them. Timed rounds: whole epochs.
    fit(new_network(warm, D, K), small, warm, ops, progress=False)
    with threadpool_limits(int(os.environ.get("FASTNET_BENCH_BLAS_THREADS", "1")), user_api="blas"):
        measure(epoch, warmup=lambda: None, rounds=3)
    if benchmark.stats is not None:
        _cells.setdefault((arch, subset), {})[backend_name] = (min(t for t, _ in times), min(e for _, e in times))

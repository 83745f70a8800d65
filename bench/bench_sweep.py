"""A lambda sweep of 8 models (the lambda-search preset's 3-layer [50, 50] BN network), one epoch
each with its evaluation: one after another vs in lock-step vs in lock-step on 2 workers, and
the sweep's matrix-multiply floor (its products alone, on 2 workers).

The modes are bench/sweep_modes.py's; each round trains all 8 models from fresh networks.
Data: 45,000 x 3072 float32 standard-normal rows (the training split's shape; the values do
not change the time) and 5,000 validation rows. With ``--benchmark-disable`` (a smoke test)
the data shrinks to 1,000 + 200 rows and the sweep to 4 models.

The BLAS thread count is the benchmark session's (bench/conftest.py: 1 unless
FASTNET_BENCH_BLAS_THREADS says otherwise); the ``-2w`` modes' workers pin theirs to 1.
``scripts/bench_sweep.py`` times the same modes round-robin at the default thread setting and
prints their throughput ratios.
"""
from __future__ import annotations

import pytest
import sweep_modes as sm


@pytest.fixture(scope="module")
def sweep(request):
    smoke = request.config.getoption("benchmark_disable", False)
    n_train, n_val, models = (1_000, 200, 4) if smoke else (sm.N_TRAIN, sm.N_VAL, 8)
    spec = {"kind": "synthetic", "n_train": n_train, "n_val": n_val}
    data = sm.load(spec)
    cfgs = sm.sweep_configs(models, 1, n_train)
    sm.warm_up(cfgs, data)
    return cfgs, data, spec


@pytest.mark.parametrize("mode", ["sequential", "lockstep", "lockstep-2w", "sequential-2w", "floor-2w"])
def test_sweep(benchmark, sweep, mode):
    cfgs, data, spec = sweep
    benchmark.group = f"sweep of {len(cfgs)} x 3-layer BN, 1 epoch each, {data.X_train.shape[0]} images"
    benchmark.extra_info["model_epochs"] = len(cfgs)
    if mode.endswith("-2w"):  # workers start and load outside the timer; one round each
        benchmark.pedantic(lambda w: w.run(), setup=lambda: ((sm.Workers(cfgs, spec, sm.mode_kind(mode)),), {}), rounds=1, iterations=1)
    else:
        benchmark.pedantic(sm.time_mode, args=(mode, cfgs, data, spec), rounds=1, iterations=1)

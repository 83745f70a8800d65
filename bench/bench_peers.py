"""One training step of fastnet (per backend), PyTorch, JAX and the matrix-multiply floor.

Groups are named ``step <network>``: in each, every implementation trains on the next
mini-batch of 100 rows, gathered through a shuffled permutation from a (45,000, 3072) float32
array (``peers.make_data``), with the default recipe (see ``peers.py``; the step's learning
rate is fixed at 0.01). The floor does only the step's unavoidable matrix products, in the
fastest orientation ``rows/W(in,out)`` and in fastnet's ``rows/W(out,in)``.

Threads: ``BENCH_THREADS`` (default 1) limits BLAS (threadpoolctl) and PyTorch; JAX reads
its thread flags once, at import, so this module sets ``XLA_FLAGS`` for 1 thread before JAX
is first imported (if something imported JAX earlier, JAX keeps its own default).
Absent peers are skipped with the reason. Every function is called twice before timing (JAX
compiles on the first call; compilation is not timed).

``pytest bench/bench_peers.py --benchmark-only``; with ``--benchmark-disable`` each runs once
on a small data set, as a smoke test. Whole-epoch ratios: ``python scripts/bench_peers.py``.
"""
from __future__ import annotations

import itertools
import os
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

THREADS = int(os.environ.get("BENCH_THREADS", "1"))
if THREADS == 1 and "jax" not in sys.modules:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

import peers  # noqa: E402

SPECS = [peers.Spec(hidden=h, bn=bn) for h in (peers.THREE, peers.NINE) for bn in (True, False)]
IDS = [f"{len(s.hidden) + 1}L-{'bn' if s.bn else 'nobn'}" for s in SPECS]
ETA = 0.01


@pytest.fixture(scope="module")
def data(request):
    """The training set: full size when timing, 1,000 rows for a smoke test."""
    disabled = request.config.getoption("benchmark_disable", False)
    return peers.make_data(1000 if disabled else peers.N_TRAIN, seed=0)


@pytest.fixture(autouse=True, scope="module")
def _threads():
    with threadpool_limits(THREADS):
        yield


def _run_steps(benchmark, impl, spec, X, y, group):
    """Benchmark ``impl`` one step at a time over successive batches of one permutation."""
    benchmark.group = f"step {spec.label}"
    benchmark.extra_info.update(threads=THREADS, implementation=group)
    impl.reset(peers.initial_network(spec))
    plan = peers.make_plan(spec, X.shape[0])
    plans = [peers.Plan(plan.idx(j), np.array([ETA]), spec.batch) for j in range(plan.n_batches)]
    batches = itertools.cycle(plans)

    def step():
        impl.epoch(X, y, next(batches))
        impl.sync()

    step()  # compile (JAX, Numba cache load), warm caches and the allocator
    step()
    benchmark(step)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_step_fastnet(benchmark, backend_name, spec, data):
    """fastnet per backend (the ``backend_name`` fixture of bench/conftest.py skips absent ones)."""
    X, y = data
    _run_steps(benchmark, peers.FastnetImpl(spec, backend_name), spec, X, y, f"fastnet-{backend_name}")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_step_fastnet_auto(benchmark, spec, data):
    X, y = data
    _run_steps(benchmark, peers.FastnetImpl(spec, "auto"), spec, X, y, "fastnet-auto")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_step_torch(benchmark, spec, data):
    reason = peers.torch_available()
    if reason:
        pytest.skip(reason)
    X, y = data
    _run_steps(benchmark, peers.TorchImpl(spec, threads=THREADS), spec, X, y, "torch")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_step_jax(benchmark, spec, data):
    """JAX: the jitted epoch function run on a one-batch plan (gather inside the jit)."""
    reason = peers.jax_available()
    if reason:
        pytest.skip(reason)
    X, y = data
    _run_steps(benchmark, peers.JaxImpl(spec), spec, X, y, "jax")


@pytest.mark.parametrize("layout", ["rows/W(in,out)", "rows/W(out,in)"])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_step_floor(benchmark, spec, layout, data):
    X, y = data
    _run_steps(benchmark, peers.FloorImpl(spec, layout), spec, X, y, f"floor[{layout}]")

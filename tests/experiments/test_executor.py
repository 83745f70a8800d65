"""Where a sweep's tasks run: a local pool and a Dask cluster behind one interface, each knowing
how many tasks it runs at once, and a task the pool loses reported rather than raised."""
from __future__ import annotations

import os

import pytest

from fastnet.experiments.executor import dask_pool, run_tasks, worker_pool


def collect(pool, tasks) -> dict:
    out = {}
    run_tasks(pool, tasks, lambda key, result, lost: out.__setitem__(key, (result, lost)))
    return out


def test_a_local_pool_runs_tasks_and_reports_a_lost_one():
    with worker_pool(2) as pool:
        assert pool.workers == 2 and pool.where == "2 worker processes (BLAS threads pinned to 1)"
        done = collect(pool, {"pid": (os.getpid, ()), "env": (os.getenv, ("OMP_NUM_THREADS",))})
        assert done["env"] == ("1", None)                    # the initializer pinned the worker
        assert done["pid"][0] != os.getpid() and done["pid"][1] is None
    with worker_pool(1) as pool:
        (result, lost), = collect(pool, {"dies": (os._exit, (3,))}).values()  # the worker process ends mid-task
    assert result is None and lost.startswith("worker process died (")


def test_a_dask_pool_counts_the_clusters_threads():
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'fastnet[dask]')")
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
        with dask_pool(cluster.scheduler_address) as pool:
            assert pool.workers == 2 and pool.where == f"the dask cluster {cluster.scheduler_address} (2 workers)"
            done = collect(pool, {i: (os.getenv, ("OPENBLAS_NUM_THREADS",)) for i in range(3)})
    assert done == {i: ("1", None) for i in range(3)}
